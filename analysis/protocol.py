"""The paper's restoration protocol on benchmark test sets: ``python -m analysis.protocol RUN --testset set5:PATH``.

A trained run directory (``python -m analysis.train``) is scored on named test sets (:mod:`analysis.testsets`
layouts) for its own task, scale and noise level:

- ``sr``: HR modcropped to the scale, LR from the set or MATLAB bicubic; PSNR/SSIM on the Y channel (BT.601,
  ``16 + 65.481 R + 128.553 G + 24.966 B``), border ``scale`` pixels cropped, outputs rounded to 8 bits: the
  convention of the SR literature (EDSR, RCAN, BasicSR's ``calculate_psnr(..., crop_border=s, test_y_channel=True)``);
- ``denoise``: the HR images plus Gaussian noise of the run's sigma, fixed by ``(--seed, image index)``;
  Y-channel PSNR/SSIM with border 0, and RGB PSNR (``psnr_rgb``, the colour-denoising convention) alongside;
- ``derain``: the Rain100L test pairs (``--testset rain100l[:DATA_ROOT]``); Y channel, border 0.

``--rotated`` adds the rotated test sets: every test image turned by 0/90/180/270 degrees, with and without a flip
(the eight elements of ``dih4``, exact pixel permutations), inputs and targets together.

Writes ``protocol.json`` (one row per test set and rotation: mean PSNR/SSIM of the model and of the trivial
restoration, the conventions used) and ``protocol_images.csv`` (per image) atomically into ``--out`` (default: the
run directory).
"""

from __future__ import annotations

from symmetry import interrupt

interrupt.install(__name__)  # first, before the imports below (seconds): a Ctrl-C while they run ends quietly
# ruff: noqa: E402 - the imports follow the Ctrl-C handler on purpose

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.config import CliParser
from analysis.evaluate import run_model
from analysis.metrics import psnr, quantize, ssim
from analysis.rundir import load_run
from analysis.tasks import baseline, eval_examples, load_items
from analysis.testsets import ROTATION_GROUP, load_testset
from analysis.testsets import rotated as rotate
from symmetry.errors import UsageError
from symmetry.io import atomic_write_text, check_writable, to_json
from symmetry.runtime import cli_entry, progress, resolve_device

PROTOCOL_FILE = "protocol.json"
PROTOCOL_IMAGES_FILE = "protocol_images.csv"
DERAIN_SETS = ("rain100l",)


def parse_testset(spec: str) -> tuple[str, str | None]:
    """``NAME:PATH`` (or ``rain100l`` / ``rain100l:DATA_ROOT``) as ``(name, path or None)``."""
    name, sep, path = spec.partition(":")
    name = name.strip().lower()
    if not name or (sep and not path):
        raise UsageError(f"--testset {spec!r}: write NAME:PATH, e.g. set5:/data/Set5 (or rain100l[:DATA_ROOT])")
    if not sep and name not in DERAIN_SETS:
        raise UsageError(f"--testset {spec!r} needs a folder: write {name}:PATH")
    return name, path or None


def border_of(task: str, scale: int) -> int:
    """Pixels cropped at each side before scoring: ``scale`` for SR, 0 for denoising and deraining."""
    return scale if task == "sr" else 0


def score(out, target, *, task: str, scale: int, eight_bit: bool = True) -> dict[str, float]:
    """``psnr``, ``ssim`` (Y channel for RGB, border :func:`border_of`) and ``psnr_rgb`` of one output."""
    if eight_bit:
        out = quantize(out)
    b = border_of(task, scale)
    y = target.shape[0] == 3
    return {
        "psnr": float(psnr(out, target, crop_border=b, test_y_channel=y)),
        "ssim": float(ssim(out, target, crop_border=b, test_y_channel=y)),
        "psnr_rgb": float(psnr(out, target, crop_border=b)),
    }


def protocol_examples(
    task: str,
    name: str,
    path: str | None,
    *,
    scale: int = 1,
    sigma: float = 25.0,
    seed: int = 0,
    channels: str = "rgb",
    max_images: int | None = None,
):
    """The evaluation examples of one test set for ``task`` (see the module docstring)."""

    if task == "derain":
        if name not in DERAIN_SETS:
            raise UsageError(f"a derain run is scored on {', '.join(DERAIN_SETS)}, not {name!r}")
        items = load_items("derain", name, split="test", data_root=path, channels=channels, max_images=max_images)
    else:
        if name in DERAIN_SETS:
            raise UsageError(f"{name} is a deraining set; a {task} run is scored on SR/denoising sets (set5:PATH, ...)")
        if path is None:
            raise UsageError(f"--testset {name} needs a folder: write {name}:PATH")
        items = load_testset(path, scale=scale if task == "sr" else 1, channels=channels, max_images=max_images)
    return eval_examples(items, task, scale=scale if task == "sr" else 1, sigma=sigma, seed=seed)


def evaluate_protocol(
    run_dir: str | Path,
    testsets: list[tuple[str, str | None]],
    *,
    rotated: bool = False,
    seed: int = 0,
    device: str = "auto",
    max_images: int | None = None,
    out: str | Path | None = None,
    write: bool = True,
    show_progress: bool = True,
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Score a run on ``testsets`` (``(name, path)`` as :func:`parse_testset`); returns summary rows and per image."""

    out_dir = Path(out or run_dir)
    if write:
        check_writable(out_dir / PROTOCOL_FILE, "--out")
    dev = resolve_device(device)
    cfg, model, _ = load_run(run_dir, dev)
    task, sigma = cfg.task, float(cfg.sigma)
    scale = int(cfg.scale or 1) if task == "sr" else 1
    sets = []
    for name, path in testsets:
        examples = protocol_examples(
            task, name, path, scale=scale, sigma=sigma, seed=seed, channels=cfg.channels, max_images=max_images
        )
        sets.append((name, path, "none", examples))
        if rotated:
            sets.append((name, path, ROTATION_GROUP, rotate(examples)))
    rows, summary = [], []
    total = sum(len(s[3]) for s in sets)
    with progress(total, "protocol", enabled=show_progress) as bar:
        for name, _path, rotation, examples in sets:
            for ex in examples:
                kw = {"task": task, "scale": scale, "eight_bit": ex.eight_bit}
                model_scores = score(run_model(model, ex.input, dev), ex.target, **kw)
                base = score(baseline(ex, task, scale).float(), ex.target, **kw)
                rows.append(
                    {"testset": name, "rotation": rotation, "image": ex.name, **model_scores}
                    | {f"baseline_{k}": v for k, v in base.items()}
                )
                bar.advance()
    frame = pd.DataFrame(rows)
    for (name, rotation), sub in frame.groupby(["testset", "rotation"], sort=False):
        summary.append(
            {
                "testset": name,
                "path": next(p for n, p, r, _ in sets if n == name and r == rotation),
                "task": task,
                "scale": scale,
                "sigma": sigma if task == "denoise" else None,
                "rotation": rotation,
                "n_images": len(sub),
                "psnr": float(sub["psnr"].mean()),
                "ssim": float(sub["ssim"].mean()),
                "psnr_rgb": float(sub["psnr_rgb"].mean()),
                "baseline_psnr": float(sub["baseline_psnr"].mean()),
                "baseline_ssim": float(sub["baseline_ssim"].mean()),
                "y_channel": "BT.601 (16 + 65.481 R + 128.553 G + 24.966 B) for RGB",
                "border": border_of(task, scale),
                "noise_seed": seed if task == "denoise" else None,
            }
        )
    if write:
        atomic_write_text(out_dir / PROTOCOL_FILE, to_json({"run": str(run_dir), "model": cfg.model, "rows": summary}))
        atomic_write_text(out_dir / PROTOCOL_IMAGES_FILE, frame.to_csv(index=False))
    return summary, frame


def render(summary: list[dict[str, Any]]) -> str:
    """One line per test set: model and baseline PSNR/SSIM."""
    lines = []
    for r in summary:
        what = f"{r['task']} x{r['scale']}" if r["task"] == "sr" else r["task"]
        if r["task"] == "denoise":
            what += f" sigma {r['sigma']:g}"
        rot = " rotated (dih4)" if r["rotation"] != "none" else ""
        psnr_text = "inf" if math.isinf(r["psnr"]) else f"{r['psnr']:.2f}"
        lines.append(
            f"{r['testset']}{rot} {what}: PSNR {psnr_text} dB SSIM {r['ssim']:.4f} "
            f"(baseline {r['baseline_psnr']:.2f} / {r['baseline_ssim']:.4f}; {r['n_images']} images, "
            f"Y channel, border {r['border']})"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="python -m analysis.protocol", description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run directory of python -m analysis.train")
    p.add_argument(
        "--testset",
        action="append",
        required=True,
        help="NAME:PATH of a test set folder (repeat), e.g. set5:/data/Set5; rain100l[:DATA_ROOT] for deraining",
    )
    p.add_argument("--rotated", action="store_true", help="also score the 8 dihedral copies of every test image")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed test noise (denoising)")
    p.add_argument("--max-images", type=int, default=None, help="score only the first N images of each set")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", default=None, help="folder for protocol.json and protocol_images.csv (default: RUN)")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    return p


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_images is not None and args.max_images < 1:
        raise UsageError(f"--max-images must be >= 1, got {args.max_images}")
    summary, _ = evaluate_protocol(
        args.run,
        [parse_testset(s) for s in args.testset],
        rotated=args.rotated,
        seed=args.seed,
        device=args.device,
        max_images=args.max_images,
        out=args.out,
        show_progress=not args.quiet,
    )
    if not args.quiet:
        print(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(interrupt.run(main))
