"""Benchmark of :func:`symmetry.transforms.interpolate`: fused against the unfused 16-tap gather (docs/performance.md).

    python -m benchmarks.interpolate --threads 1          # 512x512, 1e6 points, gray and RGB, float32 and float64
    python -m benchmarks.interpolate --quick              # a smoke run

The unfused form is the straightforward one: per chunk, a ``(P, 16)`` clamped tap index, one gather of
``(C, P, 16)`` values and a weighted sum (``~150-200 MB`` of temporaries for an image's 1e6 points without
chunking). The project's previous ``interpolate`` added an in-frame shortcut (int32 indices, no clamping) to
it and ran about 2x (float32) to 3.5x (float64) slower than the fused form, so the ratio printed here, against
the plain unfused form, is larger than the gain over that code. Both use the package's cubic weights, so
they agree to rounding (printed). The points are the windows of the estimator: disk windows of radius 9 px
at random centres, turned by four non-grid angles. Repetitions alternate the two forms, so the ratio compares
runs under the same load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.options import add_threads_option, use_threads
from symmetry.transforms import _tap_weights, disk_offsets, interpolate, rotation_matrix, window_positions


def unfused(image, rows, cols, chunk: int = 1 << 16):
    """Bicubic samples of ``image`` ``(C, H, W)`` by one ``(C, P, 16)`` gather per chunk (taps clamped)."""
    import torch

    c, h, w = image.shape
    flat = image.reshape(c, h * w)
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    taps = torch.arange(-1, 3)
    out = torch.empty(c, rows.numel(), dtype=image.dtype)
    for s in range(0, rows.numel(), chunk):
        r, q = rows[s : s + chunk], cols[s : s + chunk]
        r0, q0 = torch.floor(r), torch.floor(q)
        wr = torch.stack(_tap_weights((r - r0).to(image.dtype), "bicubic"), -1)
        wq = torch.stack(_tap_weights((q - q0).to(image.dtype), "bicubic"), -1)
        ri = (r0.long()[:, None] + taps).clamp(0, h - 1) * w
        qi = (q0.long()[:, None] + taps).clamp(0, w - 1)
        idx = (ri[:, :, None] + qi[:, None, :]).reshape(-1)  # (P * 16,)
        vals = flat.index_select(1, idx).reshape(c, len(r), 4, 4)
        out[:, s : s + chunk] = ((vals * wq[:, None, :]).sum(-1) * wr).sum(-1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_threads_option(p, default=1)
    p.add_argument("--size", type=int, default=512, help="image side in pixels")
    p.add_argument("--centres", type=int, default=1000, help="windows per element (4 elements, 253 points each)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions of each form (the minimum is kept)")
    p.add_argument("--quick", action="store_true", help="128x128 image, 50 centres, 2 repetitions")
    args = p.parse_args(argv)
    import torch

    if args.quick:
        args.size, args.centres, args.repeats = 128, 50, 2
    use_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    offsets = disk_offsets(9.0, 1.0)
    centres = 12 + torch.rand(args.centres, 2, generator=g, dtype=torch.float64) * (args.size - 24)
    rows, cols = window_positions(centres, offsets, rotation_matrix(torch.tensor([0.3, 0.9, 1.7, 2.5])))
    print(f"{rows.numel():,} points on a {args.size}x{args.size} image, {args.threads} thread(s)")
    print(f"{'image':>16}  {'unfused ms':>10}  {'fused ms':>8}  {'speed-up':>8}  {'max rel. diff':>13}")
    for channels, dtype in ((1, torch.float32), (3, torch.float32), (3, torch.float64)):
        image = torch.rand(channels, args.size, args.size, generator=g, dtype=dtype)
        r, c = rows.to(dtype), cols.to(dtype)
        times = {"unfused": [], "fused": []}
        for _ in range(args.repeats):
            for name, f in (("unfused", unfused), ("fused", interpolate)):
                t = time.perf_counter()
                out = f(image, r, c)
                times[name].append(time.perf_counter() - t)
        ref = unfused(image, r, c)
        diff = float((out.reshape(ref.shape) - ref).abs().max() / ref.abs().max())
        slow, fast = min(times["unfused"]), min(times["fused"])
        label = f"{channels}ch {str(dtype).removeprefix('torch.')}"
        print(f"{label:>16}  {slow * 1e3:10.1f}  {fast * 1e3:8.1f}  {slow / fast:7.2f}x  {diff:13.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
