"""``python -m experiments.sr_benchmark_cost``: training cost of the ``[full]`` sr_benchmark models, and GPU hours.

For every model of the ``[full]`` config (the authors' scripts: DIV2K, 16 blocks, 32 fields x 8, patch 96, batch
16, 150 epochs of 1000 iterations) this measures, on this CPU with one thread, one training step (forward, L1
loss, backward, Adam) on ``--batch`` samples of the config's patch size, and counts its floating-point
operations (torch's ``FlopCounterMode``, forward and backward, the filter expansion of the basis layers included).
The GPU hours are an EXTRAPOLATION, not a measurement: the step's FLOPs times the config's batch and steps,
divided by an assumed sustained GPU rate (``--gpu-tflops``, a list); the CPU rate measured here is printed beside
it so the reader sees how far the assumption is from anything measured. No GPU was used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from analysis.models import count_parameters
from experiments import sr_benchmark
from experiments.runner import load_config
from symmetry.errors import UsageError
from symmetry.io import atomic_write_text
from symmetry.runtime import CliParser, cli_entry

DEFAULT_GPU_TFLOPS = (50.0, 200.0)
"""Assumed sustained training rates (TFLOP/s): about 5% and 20% of an H100's dense fp16 peak."""


def step_cost(model: torch.nn.Module, batch: int, lr_size: int, scale: int) -> tuple[float, int]:
    """Seconds and FLOPs of one training step (L1 loss, Adam) on ``batch`` random ``lr_size`` LR patches."""
    from torch.utils.flop_counter import FlopCounterMode

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, lr_size, lr_size)
    y = torch.rand(batch, 3, lr_size * scale, lr_size * scale)
    counter = FlopCounterMode(display=False)
    with counter:
        F.l1_loss(model(x), y).backward()
    opt.zero_grad()
    start = time.perf_counter()
    loss = F.l1_loss(model(x), y)
    loss.backward()
    opt.step()
    return time.perf_counter() - start, int(counter.get_total_flops())


def estimate(config: dict, *, batch: int, gpu_tflops: tuple[float, ...], models: list[str] | None = None):
    """One row per model: parameters, measured CPU step, FLOPs per sample, and GPU hours at each assumed rate."""

    torch.set_num_threads(1)
    scale = int(config["scale"])
    lr_size = int(config["patch_size"]) // scale
    rows = []
    for cell in sr_benchmark.cells(config):
        model_name = cell["model"]
        if model_name in ("data-eps", "bicubic") or cell.get("seed") != config["seeds"][0]:
            continue
        if models and model_name not in models:
            continue
        torch.manual_seed(0)
        net = sr_benchmark.build(cell, cell)
        seconds, flops = step_cost(net, batch, lr_size, scale)
        steps = int(cell["sa_steps"]) if model_name in sr_benchmark.FROM_TL else int(cell["steps"])
        total = flops / batch * int(config["batch_size"]) * steps
        row = {
            "model": model_name,
            "params": count_parameters(net),
            "cpu_batch": batch,
            "cpu_step_seconds": seconds,
            "cpu_gflops_per_second": flops / seconds / 1e9,
            "train_tflop_per_sample_step": flops / batch / 1e12,
            "steps": steps,
            "batch_size": int(config["batch_size"]),
            "total_pflop": total / 1e15,
            "cpu_hours_extrapolated": total / (flops / seconds) / 3600,
        }
        for rate in gpu_tflops:
            row[f"gpu_hours_at_{rate:g}_tflops"] = total / (rate * 1e12) / 3600
        rows.append(row)
        print(
            f"{model_name}: {row['params']:,} params, CPU step (batch {batch}) {seconds:.1f} s "
            f"({row['cpu_gflops_per_second']:.1f} GFLOP/s), {total / 1e15:.0f} PFLOP to train, "
            + ", ".join(f"{row[f'gpu_hours_at_{r:g}_tflops']:.1f} GPU-h at {r:g} TFLOP/s" for r in gpu_tflops),
            flush=True,
        )
    return pd.DataFrame(rows)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="python -m experiments.sr_benchmark_cost", description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=1, help="samples in the measured CPU step (default 1)")
    p.add_argument("--gpu-tflops", default=",".join(f"{r:g}" for r in DEFAULT_GPU_TFLOPS),
                   help="assumed sustained GPU rates in TFLOP/s, comma-separated (default 50,200)")  # fmt: skip
    p.add_argument("--models", default="", help="comma-separated models (default: every model of [full])")
    p.add_argument("--csv", default="results/sr_benchmark/full_cost.csv", help="where the table goes")
    return p


@cli_entry
def main(argv=None) -> int:

    args = build_parser().parse_args(argv)
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    try:
        rates = tuple(float(r) for r in args.gpu_tflops.split(",") if r)
    except ValueError:
        raise UsageError(f"--gpu-tflops takes numbers like 50,200, got {args.gpu_tflops!r}") from None
    if not rates or min(rates) <= 0:
        raise UsageError("--gpu-tflops needs positive rates, e.g. 50,200")
    config = load_config("sr_benchmark", "full")
    models = [m for m in args.models.split(",") if m] or None
    frame = estimate(config, batch=args.batch, gpu_tflops=rates, models=models)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.csv), frame.to_csv(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
