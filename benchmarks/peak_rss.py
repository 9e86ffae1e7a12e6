"""Peak resident memory of a measurement at 25 and at 200 photos (issue 20: flat to 2%).

    python -m benchmarks.peak_rss                  # Rain100L's 200 train photos if present, else 200 crops
    python -m benchmarks.peak_rss --repeat 5 --small 25 --large 200

Each size runs ``python -m symmetry.measure`` (its ``main``, default settings: the aggregated test, groups rot4, flip,
flipud, dih4; ``--quiet``, one thread) in ``--repeat`` fresh worker processes, each reading its own peak resident set
(``VmHWM`` of ``/proc/self/status``: this process's peak, not a parent's ``ru_maxrss``). glibc places large blocks
at addresses that vary with address-space randomisation, so the same run's peak varies from process to process
(by 30-100 MiB); the medians are compared, and every run is printed. Target: the median at ``--large`` photos
within :data:`RSS_GROWTH` of the median at ``--small``.

``--live`` runs the workers with ``MALLOC_MMAP_THRESHOLD_=1048576``: glibc then maps every block of 1 MiB or more on
its own and unmaps it when freed, so the peak follows the memory in use and is the same in every process (the
runs are about 40% slower: each large block is faulted in anew). It separates memory that grows with the number
of images (what the fix removed) from the allocator's placement noise. ``--mmap-threshold MIB`` sets another fixed
threshold (4 MiB made the peak flat and 50-70 MiB lower for about 15% more CPU time; docs/performance.md).

Photos: ``rain100l`` (its train split: 200 photos of 481x321) under the data root when it is there, else a folder of
300x300 gray crops of the bundled photos, cycled (:func:`benchmarks.measure._write_images`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.options import positive_int  # noqa: E402  (the benchmarks' one positive-integer type)
from symmetry.locations import data_root  # noqa: E402  (standard library only: the parent stays light)

ROOT = Path(__file__).resolve().parents[1]
RSS_GROWTH = 0.02  # the peak RSS at --large photos may exceed that at --small by at most 2% (issue 20)


def _status_mib(field: str) -> float:
    """``VmHWM`` or ``VmRSS`` of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} is not in /proc/self/status (Linux only)")


def worker(dataset: str, images: int) -> dict:
    """One measurement in this (fresh) process: the command line's main; its peak RSS and CPU seconds."""
    import resource

    from symmetry.measure import main  # lazy: the parent process needs neither torch nor the measurement

    code = main(["--dataset", dataset, "--max-images", str(images), "--quiet", "--threads", "1"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return dict(code=code, peak_mib=_status_mib("VmHWM"), cpu_s=usage.ru_utime + usage.ru_stime)


def _dataset(tmp: Path, count: int) -> tuple[str, str]:
    """The spec of ``count`` photos, and what they are."""
    if (data_root() / "rain100l" / "train" / "norain").is_dir():
        return "rain100l", "Rain100L train photos (481x321)"
    from benchmarks.measure import CROP, _write_images  # lazy: only without Rain100L

    _write_images(tmp / "crops", count)
    return f"folder:{tmp / 'crops'}", f"{CROP}x{CROP} crops of the bundled photos, cycled"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peak_rss", description=__doc__.split("\n")[0])
    p.add_argument("--small", type=positive_int, default=25, help="photos of the small run")
    p.add_argument("--large", type=positive_int, default=200, help="photos of the large run")
    p.add_argument("--repeat", type=positive_int, default=3, help="fresh processes per size (median)")
    p.add_argument("--live", action="store_true", help="glibc maps blocks >= 1 MiB on their own: the memory in use")
    p.add_argument(
        "--mmap-threshold", type=positive_int, metavar="MIB", help="glibc maps blocks >= MIB on their own (--live: 1)"
    )
    p.add_argument("--worker", nargs=2, metavar=("DATASET", "IMAGES"), help=argparse.SUPPRESS)  # internal
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    threshold = 1 if args.live else args.mmap_threshold
    if threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(threshold << 20)
    with tempfile.TemporaryDirectory() as tmp:
        spec, what = _dataset(Path(tmp), args.large)
        mode = f", glibc's mmap threshold fixed at {threshold} MiB" if threshold else ""
        print(f"peak RSS of python -m symmetry.measure (default settings) on {what}{mode}")
        print(f"{args.repeat} fresh processes per size; load {os.getloadavg()[0]:.2f} at the start")
        runs: dict[int, list[dict]] = {}
        for _ in range(args.repeat):  # sizes interleaved, so that a change of load affects both alike
            for images in (args.small, args.large):
                cmd = [sys.executable, "-m", "benchmarks.peak_rss", "--worker", spec, str(images)]
                start = time.perf_counter()
                res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
                if res.returncode != 0:
                    raise SystemExit(f"error: the worker failed: {res.stderr.strip()[-500:]}")
                out = json.loads(res.stdout.strip().splitlines()[-1])
                if out["code"] != 0:
                    raise SystemExit(f"error: the measurement exited with code {out['code']}")
                runs.setdefault(images, []).append({**out, "wall_s": time.perf_counter() - start})
    median = {n: statistics.median(r["peak_mib"] for r in rs) for n, rs in runs.items()}
    print(f"{'photos':>7} {'median VmHWM MiB':>17}   runs (MiB)                    CPU s (median)")
    for n, rs in runs.items():
        peaks = ", ".join(f"{r['peak_mib']:.0f}" for r in rs)
        print(f"{n:>7} {median[n]:>17.1f}   {peaks:<29} {statistics.median(r['cpu_s'] for r in rs):.1f}")
    growth = median[args.large] / median[args.small] - 1
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    print(
        f"peak RSS from {args.small} to {args.large} photos: {100 * growth:+.1f}% (target within "
        f"{100 * RSS_GROWTH:.0f}%) -> {'met' if abs(growth) <= RSS_GROWTH else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
