"""Start-up CPU time of the symmetry command line (issue 20), each in fresh processes, the median of ``--repeat``.

    python -m benchmarks.startup              # 5 runs of each
    python benchmarks/startup.py --repeat 9

CPU time is user + system time (``getrusage(RUSAGE_CHILDREN)`` around each child, or ``time.process_time`` inside
it), so the load of a shared machine inflates it far less than wall time. Three measurements:

1. ``python -c "import torch"``: the floor every measurement pays.
2. ``python -m symmetry.measure --help``: target under :data:`HELP_TARGET` s, and it must not import torch.
3. A measurement's start-up beyond ``import torch``: a fresh ``python`` imports torch, then every module that a real
   ``python -m symmetry.measure`` run had imported when it added its first image and ``import torch`` alone does
   not load. The target (under :data:`STARTUP_TARGET` s) is on the CPU time of that second part, timed inside the
   process (two processes' start-up and shutdown noise do not enter it); the whole-process difference from (1) is
   printed beside it. The module list is recorded from a run of the default settings on a folder of 3 small PNGs
   (:func:`record_modules`); modules that cannot be imported by name are left out and named. The modules a run
   imports only after its images (the report's table: pandas, rich) are timed too, without a target: they are
   paid once, at the end, not before the first image.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.options import positive_int  # noqa: E402  (the benchmarks' one positive-integer type)

ROOT = Path(__file__).resolve().parents[1]
HELP_TARGET = 0.5  # s of CPU for `python -m symmetry.measure --help`
STARTUP_TARGET = 0.3  # s of CPU for a measurement's imports beyond `import torch`

# Run a ``python -m`` entry point's ``--help`` as ``python -m`` does, then print the modules it imported (one a line).
_HELP_MODULES = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
real = sys.stdout
sys.stdout = open("/dev/null", "w")
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit:
    pass
sys.stdout = real
print("\\n".join(sys.modules))
"""

# A real measurement (the command line's main, default settings) that writes the modules imported by its first image
# to argv[1] and those imported by its end to argv[2]; stdlib modules only before main runs (os and sys are loaded).
_RECORD = """
import os, sys
first, last, folder = sys.argv[1:4]
import symmetry.estimators as estimators
add = estimators.MMDStatistics.add
def first_add(self, *args, **kwargs):
    if not os.path.exists(first):
        with open(first, "w") as fh:
            fh.write("\\n".join(sys.modules))
    return add(self, *args, **kwargs)
estimators.MMDStatistics.add = first_add
from symmetry.measure import main
sys.stdout = open(os.devnull, "w")
code = main(["--dataset", "folder:" + folder, "--permutations", "20", "--bootstrap", "10", "--threads", "1"])
with open(last, "w") as fh:
    fh.write("\\n".join(sys.modules))
sys.exit(code)
"""

# Import torch, then the modules named on the command line, in order: print the CPU seconds (process_time) of each
# part, then the names that could not be imported by name.
_IMPORT = """
import importlib, sys, time
start = time.process_time()
import torch
middle = time.process_time()
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name)
print(middle - start, time.process_time() - middle, *failed)
"""


def _env() -> dict:
    """The children's environment: this checkout first on the path, one thread."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def child_cpu(cmd: list[str]) -> tuple[float, str]:
    """CPU seconds (user + system) of one fresh child process running ``cmd``, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:4])} ... failed: {run.stderr.strip()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), run.stdout


def median_cpu(cmd: list[str], repeat: int) -> tuple[float, list[float], str]:
    """The median CPU seconds of ``repeat`` fresh runs of ``cmd``, every run's, and the last run's stdout."""
    times, out = [], ""
    for _ in range(repeat):
        seconds, out = child_cpu(cmd)
        times.append(seconds)
    return statistics.median(times), times, out


def help_modules(module: str = "symmetry.measure") -> set[str]:
    """The modules a fresh ``python -m MODULE --help`` has imported when it exits."""
    _, out = child_cpu([sys.executable, "-c", _HELP_MODULES, module])
    return set(out.split())


def record_modules(folder: Path) -> tuple[list[str], list[str]]:
    """The modules a real measurement (default settings, 3 small PNGs in ``folder``) had imported by its first image,
    and those it imported after it, in the order they were imported."""
    from PIL import Image  # lazy: only the recording needs it

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.effect_noise((160, 160), 40 + 10 * i).save(folder / f"{i}.png")
    first, last = folder.parent / "first.txt", folder.parent / "last.txt"
    child_cpu([sys.executable, "-c", _RECORD, str(first), str(last), str(folder)])
    at_first = first.read_text().split()
    return at_first, [m for m in last.read_text().split() if m not in set(at_first)]


def _imports(py: str, modules: list[str], repeat: int) -> dict:
    """``repeat`` fresh processes importing torch, then ``modules``: whole-process CPU seconds (each run), CPU seconds
    of the imports after torch (each run, measured inside the process) and the names that could not be imported."""
    whole, after, failed = [], [], set()
    for _ in range(repeat):
        seconds, out = child_cpu([py, "-c", _IMPORT, *modules])
        _, rest, *names = out.split()
        whole.append(seconds)
        after.append(float(rest))
        failed.update(names)
    return dict(whole=whole, after=after, failed=sorted(failed))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=positive_int, default=5, help="fresh runs of each measurement (median)")
    args = p.parse_args(argv)
    py, med = sys.executable, statistics.median
    print(f"start-up CPU time (user + sys), median of {args.repeat} fresh processes; load {os.getloadavg()[0]:.2f}")
    with_torch = set(child_cpu([py, "-c", "import sys, torch; print(*sys.modules)"])[1].split())
    with tempfile.TemporaryDirectory() as tmp:
        at_first, after = record_modules(Path(tmp) / "images")
    startup_modules = [m for m in at_first if m not in with_torch and m != "__main__"]
    report_modules = [m for m in after if m not in with_torch and m != "__main__"]
    floor = _imports(py, [], args.repeat)
    helped, help_all, _ = median_cpu([py, "-m", "symmetry.measure", "--help"], args.repeat)
    torch_in_help = "torch" in help_modules()
    start = _imports(py, startup_modules, args.repeat)
    full = _imports(py, startup_modules + report_modules, args.repeat)
    beyond = med(start["after"])

    def row(label: str, runs: list[float]) -> None:
        print(f"  {label:<66} {med(runs):6.3f} s   (runs {', '.join(f'{t:.2f}' for t in runs)})")

    row("python -c 'import torch' (whole process)", floor["whole"])
    row("python -m symmetry.measure --help (whole process)", help_all)
    row(f"import torch, then a measurement's modules at its first image ({len(startup_modules)})", start["whole"])
    row("  of which the imports after torch (timed inside the process)", start["after"])
    difference = med(start["whole"]) - med(floor["whole"])
    print(f"  {'  whole-process difference from import torch (noisier)':<66} {difference:6.3f} s")
    row(
        f"  then the modules a run imports after its images ({len(report_modules)})",
        [a - b for a, b in zip(full["after"], start["after"])],
    )
    packages = sorted({m.split(".")[0] for m in report_modules if not m.startswith("_")})
    print(f"    (packages: {', '.join(packages) or 'none'})")
    failed = sorted(set(start["failed"]) | set(full["failed"]))
    if failed:
        print(f"  not importable by name (left out): {', '.join(failed)}")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    help_met = helped < HELP_TARGET and not torch_in_help
    print(
        f"--help: {helped:.3f} s of CPU (target < {HELP_TARGET} s), imports torch: {'yes' if torch_in_help else 'no'}"
        f" -> {'met' if help_met else 'NOT met'}"
    )
    print(
        f"a measurement's start-up beyond import torch: {beyond:.3f} s of CPU (target < {STARTUP_TARGET} s) -> "
        f"{'met' if beyond < STARTUP_TARGET else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
