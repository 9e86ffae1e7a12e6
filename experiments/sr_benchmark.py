"""``sr_benchmark``: the paper's x2 super-resolution comparison on Set5, Set14 and B100 (issue 19).

Models (:data:`MODELS`), all in the authors' EDSR layout (``analysis.models``, ``layout="authors"``: no global
skip, ``res_scale`` 0.1, 3x3 last conv, ordinary upsampler on the ``width * |G|`` channels):

- ``bicubic``: MATLAB bicubic upsampling (no training);
- ``plain``: EDSR with ``channels`` channels and 3x3 convs (the authors' baseline: as many channels as the
  equivariant networks' tensors);
- ``plain-matched``: EDSR whose width gives the parameter count of ``rot8`` (3x3 convs);
- ``rot4``, ``rot8``, ``flip``: B-Conv equivariant networks (the authors' bicubic basis) with ``channels`` tensor
  channels (``flip``: left-right mirror, the group the photos are measured symmetric under);
- ``tl``: the authors' transformation-learned network (group :data:`ADAPTIVE_GROUP`);
- ``sa``: SA-Conv fine-tuned ``sa_steps`` from the ``tl`` cell of the same seed (the authors' recipe), on the
  continuation of the same data stream;
- ``tl-cont``: the control for ``sa``: the same ``tl`` cell trained ``sa_steps`` more steps as ``tl`` on the same
  continuation (so ``sa - tl-cont`` is the hypernetwork's gain at equal steps).

One cell trains one model for one seed on the training photos (``data``: the 200 Berkeley photos of
``rain100l/train/norain``, LR by MATLAB bicubic) with L1 loss, Adam and ``dih4`` augmentation (EDSR's flips and
quarter turns), and scores it with :mod:`analysis.protocol` (Y-channel PSNR/SSIM, border = scale, 8-bit output)
on each test set, unrotated and "rotated" (:func:`analysis.testsets.rotated_cycle`: image ``i`` turned by one
non-identity element of ``dih4``). Rows: one per (test set, rotation), with the per-image PSNR/SSIM as JSON text,
parameters, FLOPs, steps, training time and the model's equivariance error (:mod:`analysis.equivariance`,
learned-part normalisation; the authors' layout has no skip, so it is the whole output). One ``data-eps`` cell
measures the training photos' symmetry error (:func:`symmetry.measure.measure`, ``preset="photos"``).

Cells are resumable (training checkpoints under ``results/sr_benchmark/work``) and every finished cell's rows are
cached there, so :mod:`experiments.sr_benchmark_workers` can compute cells in parallel processes and
``python -m experiments.run sr_benchmark --quick`` then only gathers them. Statistics and the report's tables are
in :mod:`experiments.sr_benchmark_stats`.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from analysis.equivariance import equivariance_error, summarize
from analysis.evaluate import run_model
from analysis.fit import fit
from analysis.models import build_model, count_parameters, init_sa_from_tl, plain_parameter_count
from analysis.protocol import protocol_examples, score
from analysis.rundir import CHECKPOINT_FILE, read_checkpoint, run_fingerprint
from analysis.tasks import PatchDataset, _centre_box, baseline, load_items
from analysis.testsets import rotated_cycle
from experiments.runner import Context, SkipCell, cell_key
from experiments.sr_benchmark_stats import gain_figure, verdict_text
from symmetry.errors import UsageError
from symmetry.io import atomic_write_text
from symmetry.measure import measure
from symmetry.transforms import imresize

MODELS = ("bicubic", "plain", "plain-matched", "rot4", "rot8", "flip", "tl", "sa", "tl-cont")
FROM_TL = ("sa", "tl-cont")
"""Models that start from the trained ``tl`` cell of the same seed and train ``sa_steps`` more."""
ADAPTIVE_GROUP = "rot8"
"""Group of ``tl`` and ``sa``: the authors' ``--tranNum 8``."""
EQUIVARIANT_GROUPS = {"rot4": "rot4", "rot8": "rot8", "flip": "flip"}
EQUIVARIANT_GROUPS.update({m: ADAPTIVE_GROUP for m in ("tl", "sa", "tl-cont")})
GROUP_ORDERS = {"rot4": 4, "rot8": 8, "flip": 2}
TRAINED_KEYS = ("data", "scale", "layout", "res_scale", "patch_size", "batch_size", "steps", "lr", "schedule")
TRAINED_KEYS += ("lr_step", "augment", "amp", "max_images", "depth")
SCORE_KEYS = ("testset_dir", "testsets", "rotated", "rotated_testsets", "test_images", "eq_images", "eq_crop")
SCORE_KEYS += ("flops_size",)
ROTATION_NONE = "none"
ROTATION_CYCLE = "dih4-cycle"
CELL_CACHE = "cells"
"""Subfolder of the work folder holding every finished cell's rows (``<cell>.json``)."""


# ---- cells ----------------------------------------------------------------------------------------------------


def _architecture(model: str, config: dict) -> dict:
    """The ``build_model`` options of a named model (see the module docstring)."""
    channels, k_plain, k = int(config["channels"]), int(config["plain_kernel_size"]), int(config["kernel_size"])
    if model == "plain":
        return {"kind": "plain", "plain_width": channels, "kernel_size": k_plain}
    if model == "plain-matched":
        target = _parameters(_architecture("rot8", config), config)
        return {"kind": "plain", "plain_width": _matched_width(target, config), "kernel_size": k_plain}
    group = EQUIVARIANT_GROUPS[model]
    order = GROUP_ORDERS[group]
    if channels % order:
        raise ValueError(f"channels {channels} is not a multiple of |{group}| = {order}")
    kind = {"rot4": "equivariant", "rot8": "equivariant", "flip": "equivariant", "tl-cont": "tl"}.get(model, model)
    arch = {"kind": kind, "group": group, "width": channels // order, "kernel_size": k, "basis": config["basis"]}
    if kind in ("tl", "sa"):
        arch["variant"] = config["variant"]  # analysis.models: the authors' TL/SA-Conv ("authors") or "bounded"
    return arch


ARCH_KEYS = ("kind", "group", "width", "plain_width", "kernel_size", "basis", "variant")


def build(arch: dict, cell: dict) -> torch.nn.Module:
    """The network of a cell (``arch``: :func:`_architecture`, or the cell itself)."""

    options = {k: v for k, v in arch.items() if k in ARCH_KEYS and k != "kind"}
    return build_model(
        arch["kind"],
        scale=int(cell["scale"]),
        depth=int(cell["depth"]),
        layout=cell["layout"],
        res_scale=float(cell["res_scale"]),
        **options,
    )


def _parameters(arch: dict, config: dict) -> int:

    return count_parameters(build(arch, config))


def _matched_width(target: int, config: dict) -> int:
    """Width of a plain EDSR (``plain_kernel_size``) whose parameter count is closest to ``target``."""

    def count(w: int) -> int:
        kw = dict(scale=int(config["scale"]), in_channels=3, depth=int(config["depth"]), layout=config["layout"])
        return plain_parameter_count(w, kernel_size=int(config["plain_kernel_size"]), **kw)

    w = 1
    while count(w + 1) <= target:
        w += 1
    return w if abs(count(w) - target) <= abs(count(w + 1) - target) else w + 1


def cells(config: dict) -> list[dict]:
    """The ``data-eps`` cell, one ``bicubic`` cell, then one cell per (model, seed); ``sa`` after its ``tl``."""
    unknown = [m for m in config["models"] if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    score = {k: config[k] for k in SCORE_KEYS}
    out: list[dict] = [
        {
            "model": "data-eps",
            "data": config["data"],
            "eps_groups": list(config["eps_groups"]),
            "eps_preset": config["eps_preset"],
            "eps_images": config["eps_images"],
            "eps_seed": config["eps_seed"],
        }
    ]
    if "bicubic" in config["models"]:
        out.append({"model": "bicubic", "scale": config["scale"], **score})
    trained = {k: config[k] for k in TRAINED_KEYS}
    models = sorted((m for m in config["models"] if m != "bicubic"), key=lambda m: m in FROM_TL)
    for model in models:
        arch = _architecture(model, config)
        extra = {"init": "tl", "sa_steps": config["sa_steps"]} if model in FROM_TL else {}
        for seed in config["seeds"]:
            out.append({"model": model, **arch, **trained, **score, **extra, "seed": int(seed)})
    return out


def tl_cell_of(cell: dict) -> dict:
    """The ``tl`` cell an ``sa`` or ``tl-cont`` cell starts from (same settings and seed)."""
    tl = {k: v for k, v in cell.items() if k not in ("init", "sa_steps")}
    return tl | {"model": "tl", "kind": "tl"}


# ---- data -----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def training_items(data: str, data_root: str | None, scale: int, max_images: int):
    """The training photos as SR items (HR modcropped, LR by MATLAB bicubic rounded to 8 bits), cached per process."""

    return load_items("sr", data, split="train", data_root=data_root, scale=scale, max_images=max_images or None)


@functools.lru_cache(maxsize=8)
def test_examples(root: str, scale: int, limit: int):
    """The evaluation examples of one test set folder (:func:`analysis.protocol.protocol_examples`)."""

    return protocol_examples("sr", Path(root).name.lower(), root, scale=scale, max_images=limit or None)


def _testset_roots(cell: dict, ctx: Context) -> list[tuple[str, str]]:
    base = f"{cell['testset_dir']}/" if cell["testset_dir"] else ""
    missing = [name for name in cell["testsets"] if not ctx.data_available(base + name)]
    if missing:
        raise SkipCell(f"test set(s) {', '.join(missing)} not found under {ctx.data_root}/{base}; pass --data-root")
    return [(name, str(ctx.data_root / f"{base}{name}")) for name in cell["testsets"]]


# ---- training -------------------------------------------------------------------------------------------------


def _fingerprint(cell: dict) -> dict:

    return run_fingerprint(cell, cell["data"], cell["seed"])


def train_cell(cell: dict, ctx: Context) -> tuple[torch.nn.Module, dict]:
    """Train (or resume, or reload) the model of ``cell``; ``sa`` first makes sure its ``tl`` cell is trained.

    Returns the model and ``{"steps", "train_seconds"}`` (``sa``, ``tl-cont``: their own steps plus the ``tl`` ones).
    """

    torch.set_num_threads(1)  # one thread per process: ~6x faster than the default on a shared 2-core machine
    root = str(ctx.data_root) if ctx.data_root else None
    items = training_items(cell["data"], root, int(cell["scale"]), int(cell["max_images"]))
    data = PatchDataset(
        items, "sr", patch_size=int(cell["patch_size"]), scale=int(cell["scale"]), augment=cell["augment"] or None,
        seed=int(cell["seed"]),
    )  # fmt: skip
    torch.manual_seed(int(cell["seed"]))
    model = build(cell, cell).to(ctx.device)
    offset, before = 0, {"steps": 0, "train_seconds": 0.0}
    steps = int(cell["steps"])
    if cell["model"] in FROM_TL:
        tl = tl_cell_of(cell)
        _, before = train_cell(tl, ctx)
        state = read_checkpoint(ctx.workdir / cell_key(tl) / CHECKPOINT_FILE)["model"]
        if cell["model"] == "sa":
            init_sa_from_tl(model, state, kind="tl", group=tl["group"], basis=tl["basis"])
        else:
            model.load_state_dict(state)
        offset, steps = int(tl["steps"]), int(cell["sa_steps"])
    batch = int(cell["batch_size"])

    def batches(k: int):
        first = (offset + k) * batch  # sa continues the tl run's data stream
        x, y = data.batch(range(first, first + batch))
        return x.to(ctx.device), y.to(ctx.device)

    result = fit(
        model,
        lambda net, b: F.l1_loss(net(b[0]), b[1]),
        batches,
        steps=steps,
        lr=float(cell["lr"]),
        schedule=cell["schedule"],
        lr_step=int(cell["lr_step"]) or None,
        device=ctx.device,
        amp=bool(cell["amp"]),
        run_dir=ctx.workdir / cell_key(cell),
        resume=True,
        fingerprint=_fingerprint(cell),
        ckpt_every=max(1, steps // 10),
        log_every=max(1, steps // 20),
    )
    state = read_checkpoint(ctx.workdir / cell_key(cell) / CHECKPOINT_FILE, map_location=ctx.device)
    model.load_state_dict(state["model"])  # the stored weights, also when the run had already finished
    return model, {
        "steps": before["steps"] + result.step,
        "train_seconds": before["train_seconds"] + result.train_seconds,
    }


# ---- scoring --------------------------------------------------------------------------------------------------


def flops(model: torch.nn.Module, size: int, device: torch.device) -> int:
    """Floating-point operations of one forward pass on a ``(1, 3, size, size)`` LR input (torch's counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, size, size, device=device))
    finally:
        model.train(was)
    return int(counter.get_total_flops())


EQ_COLUMNS = ("eq_rot8", "eq_rot8_mean", "eq_quarter", "eq_flip", "eq_res_rot8", "eq_res_quarter", "eq_res_flip")


class Bicubic(torch.nn.Module):
    """MATLAB bicubic upsampling by ``scale`` as a module (the ``bicubic`` row's map)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        return imresize(x, self.scale)

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(self(x))


def equivariance(model: torch.nn.Module, images: list[torch.Tensor], scale: int, device) -> dict[str, float]:
    """Equivariance error (``analysis.equivariance``, learned-part normalisation) over ``rot8`` and ``flip``.

    ``eq_*``: of the whole output (the authors' layout has no skip, so its learned part is the output);
    ``eq_res_*``: of ``f(x) - bicubic(x)``, the detail the network adds to bicubic upsampling (``skip=`` the
    bicubic map; it is itself exact for quarter turns and flips). ``rot8``: worst over the non-identity
    rotations by multiples of 45 degrees (``_mean`` their mean); ``quarter``: worst over the grid-exact ones
    (90, 180, 270 degrees); ``flip``: the left-right mirror.
    """

    bicubic = Bicubic(scale)
    out = {}
    for prefix, skip in (("eq", None), ("eq_res", bicubic)):
        if skip is not None and isinstance(model, Bicubic):
            out.update({f"{prefix}_rot8": math.nan, f"{prefix}_quarter": math.nan, f"{prefix}_flip": math.nan})
            continue
        kw = dict(normalisation="learned", device=device, skip=skip)
        rot = summarize(equivariance_error(model, images, "rot8", **kw), "learned")
        flip = summarize(equivariance_error(model, images, "flip", **kw), "learned")
        out.update({f"{prefix}_rot8": rot["worst"], f"{prefix}_quarter": rot["grid_exact_worst"]})
        out[f"{prefix}_flip"] = flip["worst"]
        if prefix == "eq":
            out["eq_rot8_mean"] = rot["mean"]
    return out


def trained_model(cell: dict, ctx: Context) -> torch.nn.Module:
    """The stored weights of a trained cell (its final checkpoint), for scores added after it ran."""

    model = build(cell, cell).to(ctx.device)
    model.load_state_dict(read_checkpoint(ctx.workdir / cell_key(cell) / CHECKPOINT_FILE, ctx.device)["model"])
    return model


def _eq_images(cell: dict, roots: list[tuple[str, str]]) -> list[torch.Tensor]:
    """Centre crops (``eq_crop`` LR pixels) of the first ``eq_images`` LR inputs of the first test set."""

    out = []
    for ex in test_examples(roots[0][1], int(cell["scale"]), int(cell["test_images"]))[: int(cell["eq_images"])]:
        h, w = ex.input.shape[-2:]
        top, left, ch, cw = _centre_box(h, w, int(cell["eq_crop"]), 1)
        out.append(ex.input[:, top : top + ch, left : left + cw].contiguous())
    return out


def score_model(model, cell: dict, roots: list[tuple[str, str]], device) -> list[dict]:
    """One row per (test set, rotation): mean and per-image PSNR/SSIM (``analysis.protocol.score``)."""

    scale = int(cell["scale"])
    rows = []
    for name, root in roots:
        examples = test_examples(root, scale, int(cell["test_images"]))
        sets = [(ROTATION_NONE, examples)]
        if cell["rotated"] and name in cell["rotated_testsets"]:
            sets.append((ROTATION_CYCLE, rotated_cycle(examples)))
        for rotation, exs in sets:
            scores = []
            for ex in exs:
                out = baseline(ex, "sr", scale).float() if model is None else run_model(model, ex.input, device)
                scores.append(score(out, ex.target, task="sr", scale=scale, eight_bit=ex.eight_bit))
            psnrs, ssims = [s["psnr"] for s in scores], [s["ssim"] for s in scores]
            rows.append(
                {
                    "testset": name,
                    "rotation": rotation,
                    "n_images": len(exs),
                    "psnr": sum(psnrs) / len(psnrs),
                    "ssim": sum(ssims) / len(ssims),
                    "images": json.dumps([ex.name for ex in exs]),
                    "psnr_per_image": json.dumps([round(v, 5) for v in psnrs]),
                    "ssim_per_image": json.dumps([round(v, 6) for v in ssims]),
                }
            )
    return rows


def data_eps_rows(cell: dict, ctx: Context) -> list[dict]:
    """eps of the training photos per group (``symmetry.measure``, ``preset``): one row per group."""

    if not ctx.data_available(cell["data"]):
        raise SkipCell(f"{cell['data']} not found under {ctx.data_root}; pass --data-root")
    report = measure(
        cell["data"],
        ",".join(cell["eps_groups"]),
        preset=cell["eps_preset"],
        data_root=str(ctx.data_root),
        split="train",
        max_images=int(cell["eps_images"]) or None,
        seed=int(cell["eps_seed"]),
        device="cpu",
    )
    rows = []
    for group in cell["eps_groups"]:
        r = report.summary("worst", group).iloc[0]
        rows.append(
            {
                "eps_group": group,
                "eps": float(r["symmetry_error"]),
                "eps_ci_low": float(r["ci_low"]),
                "eps_ci_high": float(r["ci_high"]),
                "eps_null_q95": float(r["null_q95"]),
                "eps_p_adjusted": float(r["p_adjusted"]),
                "eps_mesh": float(r["mesh"]),
                "eps_n_images": len({r["image"] for r in report.per_image}) or None,
            }
        )
    return rows


def _add_equivariance(cell: dict, ctx: Context, rows: list[dict]) -> list[dict]:
    roots = _testset_roots(cell, ctx)
    scale = int(cell["scale"])
    model = Bicubic(scale) if cell["model"] == "bicubic" else trained_model(cell, ctx)
    eq = equivariance(model, _eq_images(cell, roots), scale, ctx.device)
    rows = [r | eq for r in rows]
    atomic_write_text(_cache_path(cell, ctx), json.dumps({"cell": cell, "rows": rows}))
    return rows


def _cache_path(cell: dict, ctx: Context) -> Path:
    return ctx.workdir / CELL_CACHE / f"{cell_key(cell)}.json"


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """The rows of one cell: from the cell cache if a worker already computed it, else computed and cached."""
    cache = _cache_path(cell, ctx)
    if cache.exists():
        rows = json.loads(cache.read_text())["rows"]
        if cell["model"] == "data-eps" or all(k in rows[0] for k in EQ_COLUMNS):
            return rows
        return _add_equivariance(cell, ctx, rows)  # cached before a column was added: compute it from the weights
    if cell["model"] == "data-eps":
        rows = data_eps_rows(cell, ctx)
    else:
        roots = _testset_roots(cell, ctx)
        if cell["model"] == "bicubic":
            rows = score_model(None, cell, roots, ctx.device)
            eq = equivariance(Bicubic(int(cell["scale"])), _eq_images(cell, roots), int(cell["scale"]), ctx.device)
            for r in rows:
                r.update({"params": 0, "flops": math.nan, "steps": 0, "train_seconds": 0.0, **eq})
        else:
            if not ctx.data_available(cell["data"]):
                raise SkipCell(f"{cell['data']} not found under {ctx.data_root}; pass --data-root")
            model, trained = train_cell(cell, ctx)

            start = time.perf_counter()
            common = {
                "params": count_parameters(model),
                "flops": flops(model, int(cell["flops_size"]), ctx.device),
                **trained,
                **equivariance(model, _eq_images(cell, roots), int(cell["scale"]), ctx.device),
            }
            rows = [r | common for r in score_model(model, cell, roots, ctx.device)]
            for r in rows:
                r["score_seconds"] = time.perf_counter() - start
    rows = [r | {"device": str(ctx.device)} for r in rows]
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps({"cell": cell, "rows": rows}))
    return rows


# ---- report ---------------------------------------------------------------------------------------------------


def figures(frame: pd.DataFrame, config: dict) -> dict:

    return {"gains": gain_figure(frame)}


def verdict(frame: pd.DataFrame, config: dict) -> str:

    return verdict_text(frame)


def check_config(config: dict) -> None:
    """A one-line :class:`UsageError` for a config the cells cannot be made from."""
    try:
        cells(config)
    except (KeyError, ValueError) as err:
        raise UsageError(f"bad sr_benchmark config: {err}") from None
