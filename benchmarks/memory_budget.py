"""Check the memory budgets (symmetry.budget, analysis.budget) against measured peaks.

Usage: ``python -m benchmarks.memory_budget [SETTING ...]``.

Each setting runs in a fresh process: the modules are imported, the resident memory is read (``VmRSS``), the
budget is estimated, the command's ``main`` runs, and the peak resident memory (``VmHWM``) is read. The ratio is
estimate / (peak - resident before); above 1 the budget over-counts. Results: docs/limits.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEASURE = ["--dataset", "skimage", "--quiet", "--device", "cpu"]
SETTINGS = {
    "measure default": ("measure", MEASURE + ["--max-images", "4"]),
    "measure perms 200k, features 256": (
        "measure",
        MEASURE + ["--max-images", "4", "--permutations", "200000", "--features", "256", "--mesh", "1"],
    ),
    "measure bootstrap 100k": ("measure", MEASURE + ["--max-images", "3", "--bootstrap", "100000", "--mesh", "2,1"]),
    "measure windows 20k": ("measure", MEASURE + ["--max-images", "3", "--windows", "20000"]),
    "train plain default": ("train", ["--steps", "2", "--val-images", "1"]),
    "train plain w64 d8 b16 p64": (
        "train",
        ["--steps", "2", "--width", "64", "--depth", "8", "--patch-size", "64", "--val-images", "1"],
    ),
    "train equivariant rot8 w16 d4": (
        "train",
        ["--steps", "2", "--model", "equivariant", "--group", "rot8", "--width", "16", "--val-images", "1"],
    ),
    "train sa rot4 w8 d4": (
        "train",
        ["--steps", "2", "--model", "sa", "--group", "rot4", "--width", "8", "--val-images", "1"],
    ),
}

_CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
cli, argv, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if cli == "measure":
    from symmetry import budget
    from symmetry.cli import build_parser, main
    args = build_parser().parse_args(argv)
    estimate = lambda: budget.measure_options_budget(args).total()
else:
    from analysis.budget import train_budget
    from analysis.train import build_parser, config_from_args, main
    args = build_parser().parse_args(argv)
    estimate = lambda: train_budget(config_from_args(args).resolved()).total()

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

before = status("VmRSS")
guess = estimate()
code = main(argv)
json.dump({"code": code, "before": before, "peak": status("VmHWM"), "estimate": guess}, open(out, "w"))
"""


def run(name: str, cli: str, argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        if cli == "train":
            argv = ["--out", str(Path(tmp) / "run"), "--device", "cpu", "--quiet", *argv]
        out = Path(tmp) / "result.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-c", _CHILD, cli, json.dumps(argv), str(out)], env=env, check=True, cwd=tmp)
        result = json.loads(out.read_text())
    used = result["peak"] - result["before"]
    return {"setting": name, "estimate_MiB": result["estimate"] / 2**20, "measured_MiB": used / 2**20,
            "ratio": result["estimate"] / max(used, 1), "exit": result["code"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("names", nargs="*", help=f"settings (default: all): {', '.join(SETTINGS)}")
    names = p.parse_args().names or list(SETTINGS)
    for name in names:
        row = run(name, *SETTINGS[name])
        print(
            f"{row['setting']:<36} estimate {row['estimate_MiB']:9.1f} MiB  measured {row['measured_MiB']:9.1f} MiB  "
            f"ratio {row['ratio']:.2f}  exit {row['exit']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
