"""Evaluate a trained run: ``python -m analysis.evaluate RUN_DIR [--group rot8] [--mesh 1]``.

Loads the run's ``config.json`` and ``checkpoint.pt`` and scores the test set of its task
(the held-out part of its data, or ``test_data``):

- test loss (the training loss function on full images), PSNR and SSIM (BasicSR style:
  Y channel of BT.601 for RGB, border crop = scale for SR, outputs rounded to 8 bits for
  8-bit data), and the same scores of the trivial restoration (the input, or bicubic
  upscaling for SR);
- the last logged training loss and the generalisation gap (test loss - training loss);
- the parameter count and the time per training step;
- the equivariance error for ``--group`` (default: the run's group) at mesh ``--mesh``
  (worst and mean over non-identity elements, and per element), on centre crops of the
  test inputs (:func:`analysis.equivariance.equivariance_error`), under both normalisations:
  ``output`` divides by ``||f(x)||``, ``learned`` by ``||f(x) - skip(x)||`` (the part the network
  learns on top of its identity / bicubic skip; a plain residual net reads non-equivariant only here);
- with ``--average GROUP``, the scores of the group average ``GroupAverage(model, GROUP)``
  (Lemma 4.1) and its cost: ``cost_factor`` = ``|G|`` forward passes and the measured time per image
  of the average and of the bare model;
- for sample-adaptive models, the predicted ``(theta0, cx, cy)`` of every test image
  (``transforms.csv``).

Writes ``metrics.json`` (and ``test_images.csv`` with per-image scores) atomically into
the run directory.
"""

from __future__ import annotations

from symmetry import interrupt

interrupt.install(__name__)  # first, before the imports below (seconds): a Ctrl-C while they run ends quietly
# ruff: noqa: E402 - the imports follow the Ctrl-C handler on purpose

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from analysis.config import CliParser, check_average_group
from analysis.equivariance import equivariance_error, summarize
from analysis.fit import loss_fn
from analysis.metrics import psnr, quantize, ssim
from analysis.models import GroupAverage, count_parameters
from analysis.rundir import IMAGES_FILE, METRICS_FILE, TRANSFORMS_FILE, load_run, read_log  # noqa: F401
from analysis.tasks import baseline, eval_examples, load_items
from symmetry.errors import DataError, UsageError
from symmetry.groups import get_group
from symmetry.io import atomic_write_text, check_writable, json_safe
from symmetry.runtime import cli_entry, resolve_device, set_threads

# ---- scoring --------------------------------------------------------------------------


def _score(out: torch.Tensor, target: torch.Tensor, eight_bit: bool, task: str, scale: int, with_ssim: bool):
    """PSNR (and SSIM) of one output against its target, by the conventions of the task."""
    if eight_bit:
        out = quantize(out)
    y = target.shape[0] == 3
    border = scale if task == "sr" else 0
    p = float(psnr(out, target, crop_border=border, test_y_channel=y, color_order="rgb"))
    s = float(ssim(out, target, crop_border=border, test_y_channel=y, color_order="rgb")) if with_ssim else math.nan
    return p, s


def run_model(model: nn.Module, x: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """``model`` on one ``(C, H, W)`` image in eval mode without gradients; returns ``(C, H', W')`` on the CPU."""
    params = list(model.parameters())
    device = device or (params[0].device if params else torch.device("cpu"))
    dtype = params[0].dtype if params else torch.float32
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x[None].to(device, dtype))[0].float().cpu()
    finally:
        model.train(was)


def score_examples(
    model: nn.Module,
    examples,
    *,
    task: str,
    scale: int = 1,
    loss: str = "l1",
    device: torch.device | None = None,
    ssim: bool = True,
) -> pd.DataFrame:
    """Per-image ``name, loss, psnr, ssim`` of ``model`` on evaluation examples."""

    rows = []
    for ex in examples:
        out = run_model(model, ex.input, device)
        value = float(loss_fn(loss, out, ex.target))
        p, s = _score(out, ex.target, ex.eight_bit, task, scale, ssim)
        rows.append({"name": ex.name, "loss": value, "psnr": p, "ssim": s})
    return pd.DataFrame(rows, columns=["name", "loss", "psnr", "ssim"])


def baseline_scores(examples, task: str, scale: int = 1, *, ssim: bool = True) -> pd.DataFrame:
    """Per-image PSNR/SSIM of the trivial restoration (noisy/rainy input, bicubic upscaling for SR)."""

    rows = []
    for ex in examples:
        p, s = _score(baseline(ex, task, scale).float(), ex.target, ex.eight_bit, task, scale, ssim)
        rows.append({"name": ex.name, "psnr": p, "ssim": s})
    return pd.DataFrame(rows, columns=["name", "psnr", "ssim"])


# ---- run files ------------------------------------------------------------------------


def _centre_square(img: torch.Tensor, size: int | None) -> torch.Tensor:
    h, w = img.shape[-2:]
    s = min(h, w) if size is None else min(size, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[..., top : top + s, left : left + s]


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


MESH_RANGE = (0.05, 16.0)
"""Meshes the equivariance error accepts: below, an image of a few pixels becomes gigapixels; above, a few pixels."""


def check_options(
    *, mesh: float, max_images: int | None, crop: int | None, eq_images: int, eq_crop: int | None
) -> None:
    """Range checks of :func:`evaluate_run`'s options (one-line :class:`UsageError`), before any work."""
    if not (isinstance(mesh, (int, float)) and math.isfinite(mesh) and MESH_RANGE[0] <= mesh <= MESH_RANGE[1]):
        raise UsageError(f"--mesh must be a finite number in [{MESH_RANGE[0]}, {MESH_RANGE[1]}], got {mesh}")
    for flag, value, low in (("--max-images", max_images, 1), ("--crop", crop, 1), ("--eq-crop", eq_crop, 8)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise UsageError(f"{flag} must be an integer >= {low} (or left out), got {value!r}")
    if not isinstance(eq_images, int) or eq_images < 1:
        raise UsageError(f"--eq-images must be an integer >= 1, got {eq_images!r}")


def evaluate_run(
    run_dir: str | Path,
    *,
    group: str | None = None,
    mesh: float = 1.0,
    split: str = "test",
    data_root: str | None = None,
    device: str = "auto",
    max_images: int | None = None,
    crop: int | None = None,
    eq_images: int = 4,
    eq_crop: int | None = 96,
    average: str | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Score a run (see the module docstring); returns the ``metrics.json`` content."""

    check_options(mesh=mesh, max_images=max_images, crop=crop, eq_images=eq_images, eq_crop=eq_crop)
    if average is not None:
        check_average_group(average)
    run = Path(run_dir)
    if write:
        check_writable(run / METRICS_FILE, "metrics file")
    dev = resolve_device(device)
    cfg, model, state = load_run(run, dev)
    eq_group = group or cfg.group
    get_group(eq_group)
    items = load_items(
        cfg.task,
        cfg.test_data or cfg.data,
        split=split,
        data_root=data_root or cfg.data_root,
        channels=cfg.channels,
        scale=cfg.scale,
        max_images=max_images,
    )
    examples = eval_examples(items, cfg.task, scale=cfg.scale, sigma=cfg.sigma, seed=cfg.seed, crop=crop)
    bare = model
    if average is not None:
        model = GroupAverage(bare, average).eval()
    started = time.perf_counter()
    scores = score_examples(model, examples, task=cfg.task, scale=cfg.scale, loss=cfg.loss, device=dev)
    time_per_image = (time.perf_counter() - started) / max(1, len(examples))
    averaging = None
    if hasattr(model, "cost_factor"):
        averaging = {
            "group": model.group.name,
            "where": "evaluation (--average)" if average is not None else "training (the run's average)",
            "cost_factor": model.cost_factor,
            "time_per_image_s": time_per_image,
        }
        if average is not None:
            started = time.perf_counter()
            score_examples(bare, examples, task=cfg.task, scale=cfg.scale, loss=cfg.loss, device=dev, ssim=False)
            bare_time = (time.perf_counter() - started) / max(1, len(examples))
            averaging["bare_time_per_image_s"] = bare_time
            averaging["measured_cost_ratio"] = _finite(time_per_image / bare_time) if bare_time > 0 else None
    base = baseline_scores(examples, cfg.task, cfg.scale)
    scores["input_psnr"], scores["input_ssim"] = base["psnr"].to_numpy(), base["ssim"].to_numpy()

    log = read_log(run)
    train_loss = float(log["loss"].iloc[-1]) if len(log) else math.nan
    steps = state.get("step", int(log["step"].iloc[-1]) if len(log) else 0)
    seconds = state.get("train_seconds", float(log["time_s"].iloc[-1]) if len(log) else math.nan)
    if not isinstance(steps, int) or not isinstance(seconds, (int, float)):
        raise DataError(f"checkpoint {run / 'checkpoint.pt'} has a malformed step or train_seconds entry")
    seconds = float(seconds)
    planned = cfg.steps if isinstance(cfg.steps, int) else None
    if planned is not None and steps < planned:
        print(
            f"warning: {run} stopped at step {steps} of the {planned} it planned: these scores are of a partly "
            f"trained network (finish it with python -m analysis.train --out {run} --resume)",
            file=sys.stderr,
        )
    test_loss = float(scores["loss"].mean())

    eq_inputs = [_centre_square(ex.input, eq_crop) for ex in examples[:eq_images]]
    has_skip = callable(getattr(model, "skip", None))
    eq = equivariance_error(
        model, eq_inputs, eq_group, mesh=mesh, device=dev, normalisation="all" if has_skip else "output"
    )
    summary = summarize(eq, "output")
    by_norm = {}
    for norm in ("output", "learned", "skip"):
        rows = eq[eq["normalisation"] == norm] if "normalisation" in eq.columns else eq
        if norm != "output" and not has_skip:
            by_norm[norm] = None
            continue
        s = summarize(eq, norm)
        by_norm[norm] = {
            "worst": s["worst"],
            "mean": s["mean"],
            "worst_element": s["worst_element"],
            "per_element": {str(r.element): float(r.equivariance_error) for r in rows.itertuples()},
        }

    transforms = None
    if hasattr(model, "predict_transform"):
        rows = []
        with torch.no_grad():
            for ex in examples:
                t = model.predict_transform(ex.input[None].to(dev, next(model.parameters()).dtype))[0].cpu()
                theta, cx, cy = (float(v) for v in t)
                rows.append({"name": ex.name, "theta0": theta, "theta0_deg": math.degrees(theta), "cx": cx, "cy": cy})
        transforms = pd.DataFrame(rows)

    metrics: dict[str, Any] = {
        "run": str(run),
        "task": cfg.task,
        "model": cfg.model,
        "group": cfg.group,
        "scale": cfg.scale,
        "sigma": cfg.sigma if cfg.task == "denoise" else None,
        "data": cfg.data,
        "test_data": cfg.test_data or cfg.data,
        "split": split,
        "n_images": len(examples),
        "crop": crop,
        "metric": {
            "psnr_ssim": "BasicSR: [0,255] scale"
            + (", Y channel (BT.601)" if cfg.channels == "rgb" else ", gray")
            + (f", border {cfg.scale}" if cfg.task == "sr" else "")
            + (", outputs rounded to 8 bits" if examples and examples[0].eight_bit else ""),
        },
        "params": count_parameters(model),
        "average": averaging,
        "time_per_image_s": time_per_image,
        "steps": steps,
        "steps_planned": planned,
        "train_seconds": _finite(seconds),
        "time_per_step_s": _finite(seconds / steps) if steps else None,
        "test_loss": test_loss,
        "train_loss": _finite(train_loss),
        "generalization_gap": _finite(test_loss - train_loss),
        "psnr": float(scores["psnr"].mean()),
        "ssim": float(scores["ssim"].mean()),
        "input_psnr": float(scores["input_psnr"].mean()),
        "input_ssim": float(scores["input_ssim"].mean()),
        "psnr_gain": float(scores["psnr"].mean() - scores["input_psnr"].mean()),
        "equivariance": {
            "group": eq_group,
            "mesh": mesh,
            "images": len(eq_inputs),
            "crop": eq_crop,
            "normalisation": "output",
            "normalisations": {
                "output": "||f(Ax) - A f(x)|| / ||f(x)|| over the comparison disk",
                "learned": "||g(Ax) - A g(x)|| / ||g(x)|| for the learned part g = f - skip (null: no skip)",
                "skip": "||skip(Ax) - A skip(x)|| / ||skip(x)||: the fixed skip's own error (null: no skip)",
            },
            "worst": summary["worst"],
            "mean": summary["mean"],
            "worst_element": summary["worst_element"],
            "per_element": by_norm["output"]["per_element"],
            "output": by_norm["output"],
            "learned": by_norm["learned"],
            "skip": by_norm["skip"],
        },
    }
    if transforms is not None:
        metrics["transforms"] = {
            "file": TRANSFORMS_FILE,
            **{f"{c}_mean": float(transforms[c].mean()) for c in ("theta0_deg", "cx", "cy")},
            **{f"{c}_std": float(transforms[c].std(ddof=0)) for c in ("theta0_deg", "cx", "cy")},
        }
    if write:
        atomic_write_text(run / IMAGES_FILE, scores.to_csv(index=False))
        if transforms is not None:
            atomic_write_text(run / TRANSFORMS_FILE, transforms.to_csv(index=False))
        atomic_write_text(run / METRICS_FILE, json.dumps(json_safe(metrics), indent=2) + "\n")
    return metrics


def render(metrics: dict[str, Any]) -> str:
    """A short human-readable summary."""
    eq = metrics["equivariance"]
    lines = [
        f"{metrics['run']}: {metrics['model']} ({metrics['group']}), task {metrics['task']}, "
        f"{metrics['params']:,} parameters, {metrics['n_images']} test images of {metrics['test_data']}",
        f"  PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}   "
        f"(input {metrics['input_psnr']:.2f} dB / {metrics['input_ssim']:.4f}; gain {metrics['psnr_gain']:+.2f} dB)",
        f"  test loss {metrics['test_loss']:.5g}  train loss {_fmt(metrics['train_loss'])}  "
        f"gap {_fmt(metrics['generalization_gap'])}  time/step {_fmt(metrics['time_per_step_s'])} s",
        f"  equivariance error ({eq['group']}, mesh {eq['mesh']}): worst {eq['worst']:.3g} ({eq['worst_element']}), "
        f"mean {eq['mean']:.3g} of ||f(x)||"
        + (f"; worst {eq['learned']['worst']:.3g} of the learned part" if eq.get("learned") else ""),
    ]
    if metrics.get("average"):
        a = metrics["average"]
        lines.append(
            f"  group average over {a['group']} ({a['where']}): {a['cost_factor']} forward passes, "
            f"{a['time_per_image_s']:.4g} s/image"
            + (f" vs {a['bare_time_per_image_s']:.4g} s bare" if a.get("bare_time_per_image_s") else "")
        )
    if "transforms" in metrics:
        t = metrics["transforms"]
        lines.append(
            f"  predicted transforms: theta0 {t['theta0_deg_mean']:.2f} +- {t['theta0_deg_std']:.2f} deg, "
            f"cx {t['cx_mean']:.3f}, cy {t['cy_mean']:.3f}"
        )
    return "\n".join(lines)


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


# ---- command line ---------------------------------------------------------------------


class _DefaultsOnce(argparse.HelpFormatter):
    """Append ``(default: X)`` to an option's help unless it names its default itself or has none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m analysis.evaluate",
        description="Score a training run on its test set and measure its equivariance; writes RUN/metrics.json.",
        formatter_class=_DefaultsOnce,
    )
    p.add_argument("run", help="run directory (holds config.json and checkpoint.pt)")
    p.add_argument("--group", default=None, help="group of the equivariance error (default: the run's group)")
    p.add_argument("--mesh", type=float, default=1.0, help="mesh size h of the equivariance error")
    p.add_argument("--split", default="test", choices=["valid", "test"], help="evaluation split")
    p.add_argument("--data-root", default=None, help="where the data lives (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--max-images", type=int, default=None, help="score only the first N test images")
    p.add_argument("--crop", type=int, default=None, help="score centre crops of this size (default: full images)")
    p.add_argument("--eq-images", type=int, default=4, help="test images used for the equivariance error")
    p.add_argument("--eq-crop", type=int, default=96, help="centre square of the inputs for the equivariance error")
    p.add_argument(
        "--average", metavar="GROUP", default=None, help="score the group average over GROUP (flip, rot4, dih4, ...)"
    )
    p.add_argument("--quiet", action="store_true", help="print nothing")
    return p


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    set_threads()
    metrics = evaluate_run(
        args.run,
        group=args.group,
        mesh=args.mesh,
        split=args.split,
        data_root=args.data_root,
        device=args.device,
        max_images=args.max_images,
        crop=args.crop,
        eq_images=args.eq_images,
        eq_crop=args.eq_crop,
        average=args.average,
    )
    if not args.quiet:
        print(render(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(interrupt.run(main))
