"""Peak memory of the training data path: eager (every image decoded in memory) vs lazy (disk cache, memory-mapped).

    python benchmarks/patch_memory.py                    # 200 synthetic 512x512 RGB PNGs, SR x2, 64 steps of 16
    python -m benchmarks.patch_memory --quick            # a smoke run (40 images of 256x256)

Writes a synthetic folder of ``--images`` PNGs into a temporary folder, then runs each variant in a fresh worker
process (``python -m benchmarks.patch_memory --worker ...``) that builds the training data exactly as
``analysis.train`` does (:func:`analysis.patches.lazy_items` + :class:`analysis.patches.ShardedPatches`, or
:func:`analysis.tasks.load_items` for eager), draws ``--steps`` global batches, and reports its own peak resident
set size (``VmHWM`` of ``/proc/self/status``: the worker itself, not a parent's ``ru_maxrss``) and the same
after importing torch alone (the floor). Variants, side by side: eager; lazy with an empty cache (decodes each
image once); lazy with the cache filled; lazy as rank 0 of 4 data-parallel ranks (reads a quarter of the images).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def vm_hwm_mib() -> float:
    """Peak resident set size of this process (``VmHWM``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def write_images(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` RGB PNGs of ``size`` x ``size``: smooth fields plus noise (compress like photographs, not like flat)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        f = rng.uniform(2, 12, 3)
        base = 127 + 80 * np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + f[2])
        rgb = np.stack([base, 255 - base, base * 0.5 + 60], -1) + rng.normal(0, 8, (size, size, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png", compress_level=1)


def worker(args) -> dict:
    import torch

    torch.set_num_threads(1)
    floor = vm_hwm_mib()
    # imported after the floor is read: the floor is the memory of torch alone
    from analysis.patches import ShardedPatches, lazy_items
    from analysis.tasks import PatchDataset, load_items

    t0 = time.perf_counter()
    spec = f"folder:{args.folder}"
    load = load_items if args.worker == "eager" else lazy_items
    items = load("sr", spec, scale=2, max_images=None)
    dataset = PatchDataset(items, "sr", patch_size=args.patch_size, scale=2, seed=0)
    stream = ShardedPatches(dataset, args.batch_size)
    rank, world = (0, 4) if args.worker == "lazy-rank0of4" else (0, 1)
    for k in range(args.steps):
        stream.batch_of_step(k, rank, world)
    return {
        "variant": args.worker,
        "peak_rss_mib": vm_hwm_mib(),
        "torch_floor_mib": floor,
        "images": len(items),
        "seconds": time.perf_counter() - t0,
    }


def run_variant(variant: str, folder: Path, args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.patch_memory", "--worker", variant, "--folder", str(folder)]
    cmd += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--patch-size", str(args.patch_size)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "SYMMETRY_CACHE": str(args.cache)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"worker {variant} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", type=int, default=512, help="image side, pixels")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=96)
    p.add_argument("--quick", action="store_true", help="40 images of 256x256, 8 steps")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.quick:
        args.images, args.size, args.steps = 40, 256, 8
    with tempfile.TemporaryDirectory(prefix="patch_memory_") as tmp:
        folder, args.cache = Path(tmp) / "images", Path(tmp) / "cache"
        write_images(folder, args.images, args.size)
        mib = args.images * args.size * args.size * 3 * 1.25 / 2**20  # HR + LR (x2) as uint8
        print(f"{args.images} images of {args.size}x{args.size} RGB, SR x2 (uint8 HR + LR: {mib:.0f} MiB), "
              f"{args.steps} steps of {args.batch_size} patches of {args.patch_size}")  # fmt: skip
        rows = [run_variant(v, folder, args) for v in ("eager", "lazy-cold", "lazy-warm", "lazy-rank0of4")]
    eager = rows[0]["peak_rss_mib"]
    print(f"{'variant':<15} {'peak RSS MiB':>13} {'minus torch floor':>18} {'ratio to eager':>15} {'s':>7}")
    for r in rows:
        extra = r["peak_rss_mib"] - r["torch_floor_mib"]
        print(
            f"{r['variant']:<15} {r['peak_rss_mib']:>13.0f} {extra:>18.0f} "
            f"{r['peak_rss_mib'] / eager:>15.2f} {r['seconds']:>7.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
