"""Benchmark of the symmetry estimator (docs/performance.md).

    python benchmarks/measure.py                  # batched vs reference, then memory at 1x/4x/16x the data
    python -m benchmarks.measure --quick          # a smoke run (small sizes)
    python -m benchmarks.measure --threads 1      # one thread for torch and NumPy's BLAS
    python -m benchmarks.measure --stand-in div2k --images 4     # 2040x1356 stand-ins for DIV2K (800 by default)

1. Speed and agreement: the default estimator (rot8, 128 windows of radius 8 px, 512
   random features, Keys bicubic) on scikit-image photos, run by ``symmetry.measure_dataset``
   (batched over windows and group elements) and by :mod:`benchmarks.reference` (one
   window at a time in NumPy), mesh by mesh with the same kernel, seed and windows. It
   prints windows per second (images x group elements x windows / seconds), the
   speed-up in wall and CPU time (target >= 40x in CPU time), the largest difference of the
   per-element errors relative to the largest error (target <= 1e-10), and the batched CPU time
   per image beside the GEMM floor: the random-feature product alone (target <= 3x at the finest mesh).
2. Memory: the command line on folders of 1x, 4x and 16x the images (300x300 crops of
   the photos, PNG files read lazily), each in a fresh process, so that the peak
   resident memory (``VmHWM`` read by the worker itself) is that size's own. Streaming keeps it flat.
3. ``--stand-in div2k``: synthetic 1/f images of DIV2K's size generated on ``--device``
   one at a time (never all in memory), measured for rot8 at meshes 2, 1 and 0.5.

Thread settings are applied before NumPy and torch are imported, so they also bind the
BLAS that the reference's matrix-vector products use.
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

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

import symmetry  # noqa: E402  (imports nothing heavy: numpy and torch load after use_threads)
from benchmarks.options import positive_int as _positive  # noqa: E402  (the benchmarks' one positive-integer type)
from benchmarks.options import use_threads  # noqa: E402
from symmetry.errors import SymmetryError  # noqa: E402
from symmetry.settings import Settings, window_scale  # noqa: E402

DIV2K_SIZE = (1356, 2040)  # rows, columns of a DIV2K HR photograph
CROP = 300  # side of the memory benchmark's images (every bundled photo is at least 300 px)
TARGET_SPEEDUP = 40.0  # CPU-time speed-up over the reference at every mesh (issue 20)
TARGET_FLOOR_RATIO = 3.0  # per-image CPU time at the finest mesh <= 3x the feature GEMM's (issue 20)
RSS_GROWTH = 0.10  # peak RSS may grow at most 10% from 1x to 16x the data
AGREEMENT = 1e-10  # relative agreement with the reference


def _settings(quick: bool) -> dict:
    """Estimator settings: the defaults (``symmetry.settings.Settings``), or small ones for a smoke run."""
    if quick:
        return dict(radius=8.0, windows=32, features=128, permutations=99, bootstrap=50)
    s = Settings()
    return dict(
        radius=s.radius, windows=s.windows, features=s.features, permutations=s.permutations, bootstrap=s.bootstrap
    )


def _status_mb(field: str) -> float:
    """``VmHWM`` (peak resident set) or ``VmRSS`` of this process from /proc/self/status, in MB.

    Unlike ``ru_maxrss``, ``VmHWM`` is this process's own peak: it does not carry over from a parent through
    fork/exec.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} is not in /proc/self/status (Linux only)")


# ---- 1. batched vs reference ------------------------------------------------------------


def compare(args) -> list[dict]:
    """Time and check the batched estimator against the reference, one mesh at a time."""
    import numpy as np

    from benchmarks.reference import ReferenceMMD  # lazy: loads numpy/torch, which must follow use_threads
    from symmetry.datasets import load_dataset  # lazy: loads numpy/torch, which must follow use_threads
    from symmetry.features import median_bandwidth  # lazy: loads numpy/torch, which must follow use_threads
    from symmetry.sources import ImageSource  # lazy: loads numpy/torch, which must follow use_threads

    opts = _settings(args.quick)
    count = args.images or (2 if args.quick else 8)
    photos = list(load_dataset("skimage"))[:count]
    sources = [ImageSource(s.name, array=s.load()) for s in photos]  # decoded once: time the estimator
    pilot = Settings(**{k: v for k, v in opts.items() if k in ("radius", "windows", "features")})
    bandwidth = median_bandwidth(sources, pilot)
    group = symmetry.get_group(args.group)
    kwargs = dict(bandwidth=bandwidth, interpolation=args.interpolation, **opts)
    api = {**kwargs, "bandwidth": bandwidth / window_scale(opts["radius"])}  # the API's standardised units
    print(
        f"1. batched vs reference: {args.group}, {len(sources)} skimage photos "
        f"({', '.join(s.name for s in sources)}), {opts['windows']} windows/image of radius {opts['radius']:g} px, "
        f"{opts['features']} features, {args.interpolation}, bandwidth {bandwidth:.3f}"
    )
    rows = []
    for h in args.mesh:
        run = lambda h=h: symmetry.measure_dataset(sources, group, mesh=h, device=args.device, **api)  # noqa: E731
        run()  # warm-up
        seconds, cpu = [], []
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            report = run()
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        fast, fast_cpu = float(np.median(seconds)), float(np.median(cpu))
        reference = ReferenceMMD(group, [h], **{k: v for k, v in kwargs.items() if k in _REFERENCE_KEYS})
        start, start_cpu = time.perf_counter(), time.process_time()
        ref = reference.run(sources)[h][1:]
        slow, slow_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        frame = report.to_frame()
        got = frame.set_index("statistic").loc[group.names[1:], "symmetry_error"].to_numpy()
        windows = len(sources) * len(group) * opts["windows"]
        floor = gemm_floor(sources, group, h, opts, args.device, args.repeat)
        rows.append(
            dict(
                mesh=h,
                per_image_cpu_s=fast_cpu / len(sources),
                gemm_floor_s=floor,
                floor_ratio=fast_cpu / len(sources) / floor,
                windows=windows,
                batched_per_s=windows / fast,
                reference_per_s=windows / slow,
                speedup=slow / fast,
                cpu_speedup=slow_cpu / fast_cpu,
                rel_diff=float(np.abs(got - ref).max() / np.abs(ref).max()),
                batched_s=fast,
                reference_s=slow,
                batched_cpu_s=fast_cpu,
                reference_cpu_s=slow_cpu,
            )
        )
    print(
        f"{'mesh':>6} {'windows':>8} {'batched w/s':>12} {'reference w/s':>14} {'speed-up':>9} "
        f"{'CPU-time speed-up':>18} {'rel. diff':>10} {'CPU ms/image':>13} {'GEMM floor ms':>14} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['mesh']:>6g} {r['windows']:>8d} {r['batched_per_s']:>12,.0f} {r['reference_per_s']:>14,.0f} "
            f"{r['speedup']:>8.1f}x {r['cpu_speedup']:>17.1f}x {r['rel_diff']:>10.1e} "
            f"{1e3 * r['per_image_cpu_s']:>13.2f} {1e3 * r['gemm_floor_s']:>14.2f} {r['floor_ratio']:>5.2f}x"
        )
    agree = all(r["rel_diff"] <= AGREEMENT for r in rows)
    fast_enough = [f"{r['mesh']:g}" for r in rows if r["cpu_speedup"] >= TARGET_SPEEDUP]
    finest = min(rows, key=lambda r: r["mesh"])
    agreement = f"agreement (max |batched - reference| / max |reference| <= {AGREEMENT:g}): {'yes' if agree else 'NO'}"
    if args.quick:  # 2 images of 32 windows: fixed costs dominate, so the speed targets are not judged
        print(f"{agreement}; speed targets not judged at --quick sizes (run without --quick)")
    else:
        print(
            f"{agreement}; CPU-time speed-up >= {TARGET_SPEEDUP:g}x at mesh {', '.join(fast_enough) or 'none'} of "
            f"{len(rows)}: {'met' if len(fast_enough) == len(rows) else 'NOT met'}; CPU per image at mesh "
            f"{finest['mesh']:g} {finest['floor_ratio']:.2f}x the GEMM floor (target <= {TARGET_FLOOR_RATIO:g}x): "
            f"{'met' if finest['floor_ratio'] <= TARGET_FLOOR_RATIO else 'NOT met'}"
        )
    print(
        f"(batched: median of {args.repeat} runs after a warm-up, on {args.device}; reference: one run in NumPy; "
        "speed-up in wall-clock time, and in process CPU time, which a busy shared machine disturbs less; GEMM "
        "floor: the random-feature product of one image's interpolated windows alone, same shapes and thread, "
        "median CPU time)"
    )
    return rows


def gemm_floor(sources, group, mesh: float, opts: dict, device: str, repeat: int) -> float:
    """CPU seconds per image of the estimator's one unavoidable product: the random-feature GEMM of the
    interpolated windows (one coset representative per coset of D4, ``windows`` each) with the ``(D, C*P)``
    projection, in the estimator's dtype (float64 on a CPU), timed alone on random numbers of the same shapes."""
    import numpy as np
    import torch

    from symmetry.features import interpolated_elements  # lazy: loads torch, which must follow use_threads
    from symmetry.transforms import disk_offsets  # lazy: loads torch, which must follow use_threads

    dtype = torch.float64 if torch.device(device).type == "cpu" else torch.float32
    points = len(disk_offsets(opts["radius"], mesh))
    rows = interpolated_elements(group.matrices(), opts["radius"], mesh) * opts["windows"]
    gen = torch.Generator().manual_seed(0)
    per_image = []
    for src in sources:
        columns = src.array.shape[0] * points
        x = torch.randn(rows, columns, generator=gen, dtype=torch.float64).to(device, dtype)
        weights = torch.randn(opts["features"], columns, generator=gen, dtype=torch.float64).to(device, dtype)
        bias = torch.zeros(opts["features"], dtype=dtype, device=device)
        torch.addmm(bias, x, weights.T)  # warm-up
        times = []
        for _ in range(max(repeat, 5)):
            start = time.process_time()
            torch.addmm(bias, x, weights.T)
            times.append(time.process_time() - start)
        per_image.append(float(np.median(times)))
    return float(np.mean(per_image))


_REFERENCE_KEYS = ("bandwidth", "radius", "windows", "features", "interpolation")


# ---- 2. memory at 1x, 4x, 16x -------------------------------------------------------------


def _write_images(folder: Path, count: int) -> None:
    """``count`` 300x300 gray PNG crops of the bundled photos, cycling through them."""
    import numpy as np
    from PIL import Image

    from symmetry.datasets import load_dataset  # lazy: loads numpy/torch, which must follow use_threads

    folder.mkdir(parents=True, exist_ok=True)
    photos = list(load_dataset("skimage"))
    for i in range(count):
        image = photos[i % len(photos)].load()[0].numpy()
        top, left = (image.shape[0] - CROP) // 2, (image.shape[1] - CROP) // 2
        crop = np.clip(np.round(image[top : top + CROP, left : left + CROP] * 255), 0, 255).astype(np.uint8)
        Image.fromarray(crop).save(folder / f"{i:05d}.png")


def worker(args) -> None:
    """One memory-benchmark size, in its own process: the command line on a folder; prints a JSON line."""

    from symmetry.measure import main  # lazy: loads numpy/torch, which must follow use_threads

    opts = _settings(args.quick)
    baseline = _status_mb("VmRSS")
    argv = ["--dataset", f"folder:{args.worker}", "--group", args.group, "--mesh", ",".join(map(str, args.mesh))]
    argv += [f"--{k}={v}" for k, v in opts.items()] + ["--device", args.device, "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        code = main([*argv, "--json", str(Path(tmp) / "report.json")])
        seconds = time.perf_counter() - start
        images = json.loads((Path(tmp) / "report.json").read_text())["meta"]["images"] if code == 0 else 0
    print(
        json.dumps(dict(code=code, images=images, seconds=seconds, peak_mb=_status_mb("VmHWM"), baseline_mb=baseline))
    )


def memory(args) -> list[dict]:
    """Throughput and peak RSS of the command line at 1x, 4x and 16x the images, each in a fresh process."""
    from symmetry.groups import get_group  # lazy: loads numpy/torch, which must follow use_threads

    base = args.memory_base or (2 if args.quick else 3)
    opts = _settings(args.quick)
    order = len(get_group(args.group))
    print(
        f"\n2. memory: python -m symmetry.measure on folders of {CROP}x{CROP} PNGs, {args.group}, "
        f"mesh {','.join(f'{h:g}' for h in args.mesh)}, one fresh process per size"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for factor in (1, 4, 16):
            folder = Path(tmp) / f"x{factor}"
            _write_images(folder, base * factor)
            cmd = [sys.executable, "-m", "benchmarks.measure", "--worker", str(folder), "--group", args.group]
            cmd += ["--mesh", ",".join(map(str, args.mesh)), "--device", args.device]
            cmd += (["--quick"] if args.quick else []) + ([f"--threads={args.threads}"] if args.threads else [])
            res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"error: memory worker failed: {res.stderr.strip().splitlines()[-1:]}")
            out = json.loads(res.stdout.strip().splitlines()[-1])
            windows = out["images"] * order * opts["windows"] * len(args.mesh)
            rows.append(dict(factor=factor, **out, windows_per_s=windows / out["seconds"]))
    print(f"{'data':>5} {'images':>7} {'seconds':>8} {'windows/s':>10} {'VmHWM MB':>12} {'RSS at start MB':>16}")
    for r in rows:
        print(
            f"{r['factor']:>4}x {r['images']:>7d} {r['seconds']:>8.1f} {r['windows_per_s']:>10,.0f} "
            f"{r['peak_mb']:>12.0f} {r['baseline_mb']:>16.0f}"
        )
    growth = rows[-1]["peak_mb"] / rows[0]["peak_mb"] - 1
    verdict = "flat memory" if growth <= RSS_GROWTH else "MEMORY GROWS WITH THE DATA"
    print(
        f"peak RSS (VmHWM of each worker) from 1x to 16x: {100 * growth:+.1f}% "
        f"(limit +{100 * RSS_GROWTH:.0f}%): {verdict}"
    )
    return rows


# ---- 3. DIV2K stand-in ----------------------------------------------------------------------


def stand_in_sources(count: int, device, size: tuple[int, int] = DIV2K_SIZE, seed: int = 0) -> list:
    """``count`` lazily generated gray 1/f images of ``size`` on ``device`` (each made when it is read)."""
    from dataclasses import dataclass

    import torch

    from symmetry.sources import ImageSource  # lazy: loads numpy/torch, which must follow use_threads

    @dataclass(eq=False)
    class StandIn(ImageSource):
        index: int = 0

        def load(self) -> torch.Tensor:
            """A natural-looking (1/f amplitude spectrum) image in [0, 1], ``(1, H, W)`` float64 like a decoded PNG."""
            rows, cols = size
            gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + self.index)
            noise = torch.randn(1, rows, cols, generator=gen, device=device, dtype=torch.float64)
            fy = torch.fft.fftfreq(rows, device=device, dtype=torch.float64)[:, None]
            fx = torch.fft.rfftfreq(cols, device=device, dtype=torch.float64)[None]
            radius = (fy**2 + fx**2).sqrt().clamp_min(1.0 / max(rows, cols))
            image = torch.fft.irfft2(torch.fft.rfft2(noise) / radius, s=(rows, cols))
            return (image - image.min()) / (image.max() - image.min())

    return [StandIn(f"stand-in-{i:04d}", index=i) for i in range(count)]


def stand_in(args) -> dict:
    """Time rot8 at meshes 2, 1, 0.5 on generated DIV2K-sized images, one at a time on the device."""
    import torch

    from symmetry.runtime import resolve_device  # lazy: loads numpy/torch, which must follow use_threads

    device = resolve_device(args.device)
    count = args.images or 800
    sources = stand_in_sources(count, device)
    start = time.perf_counter()
    for src in sources[: min(3, count)]:
        src.load()
    if device.type == "cuda":
        torch.cuda.synchronize()
    generate = (time.perf_counter() - start) / min(3, count)
    opts = _settings(args.quick)
    print(
        f"3. DIV2K stand-in: {count} generated {DIV2K_SIZE[1]}x{DIV2K_SIZE[0]} gray images on {device}, "
        f"{args.group}, mesh {','.join(f'{h:g}' for h in args.mesh)}, {opts['windows']} windows, "
        f"{opts['features']} features"
    )
    start = time.perf_counter()
    report = symmetry.measure_dataset(sources, args.group, mesh=tuple(args.mesh), device=device, **opts)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    per_image = seconds / count
    print(
        f"{count} images in {seconds:.1f} s ({per_image:.2f} s/image, of which about {generate:.2f} s generating); "
        f"800 images would take about {800 * per_image:.0f} s; worst eps at h=0.5: "
        f"{report.symmetry_error(min(args.mesh)):.3g}"
    )
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    return dict(images=count, seconds=seconds, per_image_s=per_image, generate_s=generate, device=str(device))


# ---- command line ----------------------------------------------------------------------------


def _meshes(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mesh takes comma-separated numbers like 2,1,0.5, got {text!r}") from None
    if not values or any(not h > 0 for h in values):
        raise argparse.ArgumentTypeError(f"--mesh takes positive numbers like 2,1,0.5, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.measure",
        description="Benchmark the symmetry estimator: batched vs window-by-window reference, memory as the data "
        "grows, and DIV2K-sized stand-ins.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes and settings for a smoke run")
    p.add_argument("--device", default="cpu", help="device of the batched estimator: cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--threads", type=_positive, default=1, help="torch/OpenMP/BLAS threads (1: steady timings on a shared CPU)"
    )
    p.add_argument("--group", default="rot8", help="transformation group")
    p.add_argument("--mesh", type=_meshes, default=[2.0, 1.0, 0.5], help="mesh sizes, comma-separated")
    p.add_argument("--interpolation", default="bicubic", choices=["bicubic", "bilinear"], help="interpolation (part 1)")
    p.add_argument("--images", type=_positive, default=None, help="images in part 1 (8) or for --stand-in (800)")
    p.add_argument("--repeat", type=_positive, default=3, help="timed runs of the batched estimator per mesh")
    p.add_argument("--memory-base", type=_positive, default=None, help="images at 1x in part 2 (3; --quick 2)")
    p.add_argument("--skip-reference", action="store_true", help="skip part 1")
    p.add_argument("--skip-memory", action="store_true", help="skip part 2")
    p.add_argument("--stand-in", choices=["div2k"], default=None, help="only time generated DIV2K-sized images")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the numbers as JSON")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one memory-benchmark size
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    use_threads(args.threads)
    import torch

    from symmetry.runtime import resolve_device  # lazy: loads numpy/torch, which must follow use_threads

    try:
        args.device = str(resolve_device(args.device))
        if args.worker:
            worker(args)
            return 0
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPU(s), "
            f"device {args.device}{', quick settings' if args.quick else ''}"
        )
        results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device}
        if args.stand_in:
            results["stand_in"] = stand_in(args)
        else:
            if not args.skip_reference:
                results["reference"] = compare(args)
            if not args.skip_memory:
                results["memory"] = memory(args)
    except SymmetryError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
