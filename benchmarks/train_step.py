"""Benchmark of training steps: plain vs rotation-equivariant vs sample-adaptive (docs/performance.md).

    python benchmarks/train_step.py                       # 8x3x48x48, rot8, width 16, depth 4: denoise and SR x2
    python -m benchmarks.train_step --quick --threads 1   # a smoke run
    python -m benchmarks.train_step --device cuda --amp   # mixed precision (CUDA only)

Every model is built by :func:`analysis.models.build_model` with the same settings
(``plain`` at the width that matches ``equivariant``'s parameter count) and timed on the
same batch. One repetition runs one forward+backward+optimiser step of every model in
turn (the order rotates between repetitions), so the ratios compare steps taken side by
side under the same machine load; warm-up steps are not timed. Then inference: eval mode
(filters built once and cached) against train mode (filters rebuilt every call), both
without gradients.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from analysis.fit import fit
from analysis.models import build_model, count_parameters
from benchmarks.options import add_threads_option, positive_int, use_threads
from symmetry.errors import SymmetryError
from symmetry.runtime import resolve_device

KINDS = ("plain", "equivariant", "sa")
TARGET_SA_OVER_EQUIVARIANT = 1.5


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _models(args, scale: int, device) -> dict:
    torch.manual_seed(0)
    common = dict(group=args.group, scale=scale, in_channels=3, width=args.width, depth=args.depth)
    common["kernel_size"] = args.kernel_size
    models = {kind: build_model(kind, **common).to(device) for kind in KINDS}
    with torch.no_grad():  # a non-trivial deformation, so sa's per-sample filters are not the equivariant ones
        models["sa"].hyper.out.weight.normal_(0.0, 0.1)
    return models


def time_training(args, scale: int, device) -> dict:
    """Milliseconds per training step of each model (median over interleaved repetitions)."""
    models = _models(args, scale, device)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device)
    target = torch.rand(args.batch, 3, args.size * scale, args.size * scale, generator=gen).to(device)
    optimisers = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    amp = args.amp and device.type == "cuda"

    def step(kind: str) -> float:
        model, opt = models[kind], optimisers[kind]
        model.train()
        _sync(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.l1_loss(model(x), target)
        loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for rep in range(args.warmup + args.repeat):
        order = KINDS[rep % 3 :] + KINDS[: rep % 3]
        for kind in order:
            t = step(kind)
            if rep >= args.warmup:
                times[kind].append(t)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return dict(scale=scale, params={k: count_parameters(m) for k, m in models.items()}, ms=ms)


def time_fit_overhead(args, device, steps: int = 10) -> dict:
    """Seconds of ``steps`` plain-model steps through :func:`analysis.fit.fit` and through a bare Adam loop on the
    same batch, interleaved (median over repetitions): what fit's bookkeeping (RNG snapshot per step, interrupt
    handling, schedule) costs."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device)
    common = dict(group=args.group, in_channels=3, width=args.width, depth=args.depth, kernel_size=args.kernel_size)

    def step(net, batch):
        return F.l1_loss(net(batch), batch)

    def bare() -> float:
        model = build_model("plain", **common).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            loss = step(model, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            float(loss.detach())
        _sync(device)
        return time.perf_counter() - start

    def fitted() -> float:
        model = build_model("plain", **common).to(device)
        _sync(device)
        start = time.perf_counter()
        fit(model, step, lambda k: x, steps=steps, lr=1e-4, schedule="constant", device=device)
        _sync(device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"bare": [], "fit": []}
    for rep in range(args.warmup + args.repeat):
        for name, run in (("bare", bare), ("fit", fitted)) if rep % 2 == 0 else (("fit", fitted), ("bare", bare)):
            t = run()
            if rep >= args.warmup:
                times[name].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def time_inference(args, scale: int, device) -> dict:
    """Milliseconds per forward pass without gradients: eval mode (cached filters) vs train mode (rebuilt)."""
    models = _models(args, scale, device)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(2)).to(device)
    out: dict[str, dict[str, float]] = {}
    times: dict[tuple[str, str], list[float]] = {(k, m): [] for k in KINDS for m in ("eval", "train")}
    with torch.no_grad():
        for rep in range(args.warmup + args.repeat):
            for kind in KINDS:
                for mode in ("eval", "train"):
                    models[kind].train(mode == "train")
                    _sync(device)
                    start = time.perf_counter()
                    models[kind](x)
                    _sync(device)
                    if rep >= args.warmup:
                        times[kind, mode].append(time.perf_counter() - start)
    for (kind, mode), values in times.items():
        out.setdefault(kind, {})[mode] = 1e3 * statistics.median(values)
    return out


def _report(args, device) -> None:
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {device}; batch {args.batch}x3x"
        f"{args.size}x{args.size}, {args.group}, width {args.width}, depth {args.depth}, kernel {args.kernel_size}; "
        f"median of {args.repeat} interleaved repetitions after {args.warmup} warm-up"
    )
    if args.amp and device.type != "cuda":
        print("note: --amp (bfloat16 autocast) applies on CUDA only; timing float32 on the CPU")
    for scale in args.scales:
        res = time_training(args, scale, device)
        ms, params = res["ms"], res["params"]
        task = "denoise (scale 1)" if scale == 1 else f"SR x{scale}"
        print(f"\ntraining step, {task}:")
        for kind in KINDS:
            print(f"  {kind:<12} {params[kind]:>9,d} parameters {ms[kind]:>9.1f} ms/step")
        sa_eq, eq_plain = ms["sa"] / ms["equivariant"], ms["equivariant"] / ms["plain"]
        verdict = "met" if sa_eq <= TARGET_SA_OVER_EQUIVARIANT else "NOT met"
        print(
            f"  sa/equivariant {sa_eq:.2f} (target <= {TARGET_SA_OVER_EQUIVARIANT}: {verdict}), "
            f"equivariant/plain {eq_plain:.2f}"
        )
        inf = time_inference(args, scale, device)
        print(f"inference without gradients, {task}: eval (cached filters) vs train mode (filters rebuilt)")
        for kind in KINDS:
            e, t = inf[kind]["eval"], inf[kind]["train"]
            print(f"  {kind:<12} eval {e:>8.1f} ms   train {t:>8.1f} ms   saving {100 * (1 - e / t):>5.1f}%")
    over = time_fit_overhead(args, device)
    print(
        f"\nanalysis.fit vs a bare Adam loop (plain, 10 steps): {over['fit'] / over['bare']:.3f}x "
        f"({1e3 * over['fit'] / 10:.1f} vs {1e3 * over['bare'] / 10:.1f} ms/step)"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_step",
        description="Time training steps and inference of the plain, equivariant and sample-adaptive models.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: batch 2x3x32x32, width 8, depth 2, denoising")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    add_threads_option(p, default=1)
    p.add_argument("--group", default="rot8", help="rotation group rotN")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--size", type=positive_int, default=48, help="input side in pixels")
    p.add_argument("--width", type=positive_int, default=16, help="fields of the equivariant models")
    p.add_argument("--depth", type=positive_int, default=4, help="residual blocks")
    p.add_argument("--kernel-size", type=positive_int, default=5)
    p.add_argument("--scales", default="1,2", help="1 (denoise) and/or SR scales, comma-separated")
    p.add_argument("--repeat", type=positive_int, default=None, help="timed repetitions (default 5, --quick 3)")
    p.add_argument("--warmup", type=positive_int, default=1, help="untimed repetitions first")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    use_threads(args.threads)
    try:
        args.scales = [int(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        print(f"error: --scales takes comma-separated integers like 1,2, got {args.scales!r}", file=sys.stderr)
        return 2
    if args.quick:
        args.scales, args.batch, args.size, args.width, args.depth = args.scales[:1], 2, 32, 8, 2
    args.repeat = args.repeat or (3 if args.quick else 5)
    try:
        _report(args, resolve_device(args.device))
    except SymmetryError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
