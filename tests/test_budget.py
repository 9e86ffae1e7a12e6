"""Memory budgets (symmetry.budget, analysis.budget) and quiet Ctrl-C (symmetry.interrupt): issue 23."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from symmetry import budget
from symmetry.errors import UsageError
from symmetry.groups import get_group
from symmetry.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MEASURE = ["--dataset", "folder:imgs", "--mesh", "1,0.5", "--radius", "4", "--windows", "8", "--features", "16"]
MEASURE += ["--permutations", "20", "--bootstrap", "4", "--quiet", "--device", "cpu", "--group", "rot4,flip"]
TRAIN = ["--data", "folder:imgs", "--steps", "2", "--width", "2", "--depth", "1", "--patch-size", "16"]
TRAIN += ["--batch-size", "2", "--val-images", "0", "--device", "cpu", "--quiet"]


def _images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / f"im{i}.png")


# ---- sizes and what is available --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [("16G", 16 << 30), ("512M", 512 << 20), ("2.5GiB", int(2.5 * (1 << 30))), ("1e9", 10**9), ("4 gb", 4 << 30)],
)
def test_sizes_parse(text, expected):
    assert budget.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["abc", "-1G", "0", "inf", "nan", "1K", "12Q", ""])
def test_bad_sizes_are_refused(text):
    with pytest.raises(UsageError, match="--max-memory"):
        budget.parse_memory(text)


def _fake_proc(tmp_path: Path, available_kb: int, cgroup: str, files: dict[str, str]) -> dict[str, Path]:
    (tmp_path / "meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {available_kb} kB\n")
    (tmp_path / "cgroup").write_text(cgroup)
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return dict(meminfo=tmp_path / "meminfo", cgroup_root=tmp_path / "fs", proc_cgroup=tmp_path / "cgroup")


def test_available_memory_is_meminfo_without_a_cgroup_limit(tmp_path):
    paths = _fake_proc(tmp_path, 8 << 20, "0::/job\n", {"job/memory.max": "max\n", "job/memory.current": "5\n"})
    size, source = budget.available_memory(**paths, status=tmp_path / "none")
    assert size == 8 << 30 and "MemAvailable" in source


def test_a_cgroup_v2_limit_below_the_free_ram_wins(tmp_path):
    files = {"job/memory.max": str(3 << 30), "job/memory.current": str(1 << 30)}
    paths = _fake_proc(tmp_path, 8 << 20, "0::/job\n", files)
    size, source = budget.available_memory(**paths, status=tmp_path / "none")
    assert size == 2 << 30 and "cgroup" in source


def test_a_cgroup_v1_limit_is_read(tmp_path):
    files = {"memory/job/memory.limit_in_bytes": str(4 << 30), "memory/job/memory.usage_in_bytes": str(1 << 30)}
    paths = _fake_proc(tmp_path, 8 << 20, "4:memory:/job\n1:cpu:/\n", files)
    size, source = budget.available_memory(**paths, status=tmp_path / "none")
    assert size == 3 << 30 and "cgroup" in source


def test_the_address_space_limit_counts(tmp_path):
    """Under ``ulimit -v`` the room left in the address space is what is available (a subprocess sets it)."""
    code = (
        "import resource, sys; from symmetry.budget import available_memory;"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.RLIM_INFINITY));"
        "size, source = available_memory(); print(size, source)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    size, source = int(out.split()[0]), out.split(maxsplit=1)[1]
    assert size < 2 << 30 and "ulimit" in source


# ---- the check ---------------------------------------------------------------------------------------------


def _budget() -> budget.Budget:
    b = budget.Budget("this run")
    b.add("the big sums", 6 << 30, "--permutations")
    b.add("the windows", 1 << 30, "--windows")
    b.add("the big sums", 1 << 30, "--permutations")
    return b


def test_a_budget_over_the_limit_names_its_largest_term():
    with pytest.raises(budget.BudgetError) as err:
        budget.check(_budget(), 4 << 30)
    text = str(err.value)
    assert "\n" not in text and "8 GiB" in text and "the big sums, 7 GiB" in text and "lower --permutations" in text
    assert err.value.exit_code == 2


def test_a_budget_within_the_limit_passes():
    budget.check(_budget(), 9 << 30)  # negative control of the test above


def test_measure_budget_grows_with_each_option():
    s = Settings(features=64, permutations=100, bootstrap=10)
    groups = [get_group("rot4"), get_group("flip")]
    base = budget.measure_budget(s, [1.0], groups, images=5)
    for change in ({"permutations": 1000}, {"bootstrap": 1000}, {"features": 512}, {"windows": 4096}):
        bigger = budget.measure_budget(s.replace(**change), [1.0], groups, images=5)
        assert bigger.total() > base.total(), change
    assert budget.measure_budget(s, [1.0, 0.5], groups, images=5).total() > base.total()
    nulls = [t for t in base.terms if t.what.startswith("the randomisation-null sums")]
    assert sum(t.bytes for t in nulls) == 100 * (4 + 2) * 64 * 8  # B_perm x elements x features, float64


def test_the_null_sums_dominate_a_huge_permutation_count():
    s = Settings(features=65536, permutations=1_000_000)
    b = budget.measure_budget(s, [2.0, 1.0, 0.5], [get_group("dih4")], images=13)
    assert b.largest().what.startswith("the randomisation-null sums") and b.total() > 1 << 40


# ---- the command lines ------------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    _images(tmp_path / "imgs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_measure_refuses_more_than_max_memory(workspace, capsys):
    from symmetry.cli import main

    code = main(MEASURE + ["--max-memory", "1M", "--json", "out.json"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "--max-memory" in err and "; the largest part is " in err
    assert not (workspace / "out.json").exists()


def test_a_measurement_that_fits_gives_the_numbers_of_the_api(workspace):
    """The budget only reads the options: the command line's report equals measure_dataset's without it."""
    from symmetry.cli import main
    from symmetry.measurement import measure_dataset

    assert main(MEASURE + ["--json", "cli.json", "--max-memory", "64G"]) == 0
    api = measure_dataset(
        "folder:imgs", "rot4,flip", [1.0, 0.5], radius=4, windows=8, features=16, permutations=20, bootstrap=4,
        device="cpu",
    )  # fmt: skip
    cli = type(api).from_json(workspace / "cli.json").to_frame()
    pd.testing.assert_frame_equal(cli, api.to_frame())


def test_train_refuses_more_than_max_memory_and_writes_nothing(workspace, capsys):
    from analysis.train import main

    code = main(TRAIN + ["--out", "run", "--width", "64", "--max-memory", "1M"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "this training run" in err
    assert not (workspace / "run").exists()


def test_a_training_run_that_fits_gives_the_weights_of_the_api(workspace):
    import torch

    from analysis.train import config_from_args, main, train

    assert main(TRAIN + ["--out", "cli"]) == 0
    from analysis.train import build_parser

    train(config_from_args(build_parser().parse_args(TRAIN + ["--out", "api"])))
    a = torch.load(workspace / "cli" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(workspace / "api" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_train_budget_counts_parameters_exactly():
    """Parameters are counted on meta-device builds extended in depth: equal to the real network's count."""
    from analysis.budget import train_budget
    from analysis.config import TrainConfig
    from analysis.models import count_parameters
    from analysis.train import build_from_config

    for options in (dict(model="plain", depth=3), dict(model="equivariant", group="rot8", depth=2, width=4)):
        cfg = TrainConfig(**options).resolved()
        counted = train_budget(cfg).terms[0].bytes / 16
        assert counted == count_parameters(build_from_config(cfg)), options


# ---- Ctrl-C ---------------------------------------------------------------------------------------------------


def _default_sigint() -> None:
    """In the child: SIGINT's default action, even when the tests run where it is ignored (``nohup pytest &``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupted(module: str, argv: list[str], cwd: Path, delays: tuple[float, ...]) -> subprocess.CompletedProcess:
    """Run ``python -m module argv`` and send SIGINT after each delay (seconds since launch)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *argv],
        preexec_fn=_default_sigint,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    start = time.monotonic()
    for delay in delays:
        time.sleep(max(0.0, start + delay - time.monotonic()))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


HOOK = ("from symmetry import interrupt", "interrupt.install(__name__)")  # an entry point's first lines


def _before_the_handler(stderr: str) -> bool:
    """True when a traceback's frames are all Python's start-up or an entry point's hook lines: the signal came
    before the handler was installed (tens of milliseconds after launch on an idle machine, more under load)."""
    import re

    frames = re.findall(r'File "([^"]+)", line (\d+)', stderr)
    for path, line in frames:
        if "site-packages" in path:  # a library imported by the project: past the entry point's first lines
            return False
        if not path.startswith(str(ROOT)) or Path(path).name in ("__init__.py", "interrupt.py"):
            continue  # Python's own start-up (frozen modules, site, runpy), the package and the handler's module
        if Path(path).read_text().splitlines()[int(line) - 1].split("#")[0].strip() not in HOOK:
            return False
    return True


def _assert_quiet_interrupt(res: subprocess.CompletedProcess) -> None:
    if res.returncode == -signal.SIGINT and not res.stderr:
        pytest.skip("SIGINT landed before Python had started (it ends the process silently); the machine is loaded")
    if "Traceback" in res.stderr and _before_the_handler(res.stderr):
        pytest.skip(f"SIGINT landed before the entry point's first line had run: {res.stderr.splitlines()[-3:]}")
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr, res.stderr[-2000:]
    assert res.returncode == 130, (res.returncode, res.stderr[-500:])
    assert 1 <= len(res.stderr.strip().splitlines()) <= 2, res.stderr


@pytest.mark.parametrize("delay", [0.2, 0.4, 0.8])
@pytest.mark.parametrize("module", ["symmetry.measure", "analysis.train"])
def test_ctrl_c_during_start_up_ends_quietly(module, delay, tmp_path):
    argv = ["--quiet", "--device", "cpu"] + (["--out", "run"] if module == "analysis.train" else [])
    _assert_quiet_interrupt(_interrupted(module, argv, tmp_path, (delay,)))


@pytest.mark.parametrize("delay", [0.4, 0.8])
def test_a_second_ctrl_c_prints_no_traceback(delay, tmp_path):
    _assert_quiet_interrupt(_interrupted("symmetry.measure", ["--quiet"], tmp_path, (delay, delay + 0.05)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    [
        "symmetry.alignment",
        "analysis.evaluate",
        "analysis.compare",
        "analysis.protocol",
        "experiments.run",
        "experiments.figures",
    ],
)
def test_every_command_line_ends_quietly_on_ctrl_c(module, tmp_path):
    _assert_quiet_interrupt(_interrupted(module, ["--help"], tmp_path, (1.0,)))  # while its modules import


@pytest.mark.slow  # the modules take seconds to import before the run starts
def test_ctrl_c_while_training_keeps_a_resumable_checkpoint(tmp_path):
    _images(tmp_path / "imgs")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis.train", *TRAIN, "--out", "run", "--steps", "100000", "--log-every", "1"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 600  # imports take seconds (minutes on a loaded machine)
    while not (tmp_path / "run" / "log.csv").exists() and time.monotonic() < deadline:  # a step is done
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # deferred to the end of the step (analysis.fit)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # at once: the step is resolved to a boundary and checkpointed
    err = proc.communicate(timeout=600)[1]
    _assert_quiet_interrupt(subprocess.CompletedProcess(proc.args, proc.returncode, "", err))
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_only_tracebacks_before_the_handler_are_excused():
    before = f'Traceback:\n  File "<frozen runpy>", line 88, in _run_code\n  File "{ROOT}/symmetry/measure.py", line 16'
    after = f'Traceback:\n  File "{ROOT}/symmetry/measure.py", line 23\n  File "{ROOT}/symmetry/cli.py", line 9'
    assert (ROOT / "symmetry" / "measure.py").read_text().splitlines()[15].strip() in HOOK
    assert _before_the_handler(before) and not _before_the_handler(after)


def test_run_returns_130_when_main_is_interrupted(capsys, monkeypatch):
    from symmetry import interrupt

    monkeypatch.setattr(interrupt, "_installed", False)  # a library caller: run() returns its code

    def main() -> int:
        raise KeyboardInterrupt

    assert interrupt.run(main) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    assert interrupt.run(lambda: 0) == 0  # negative control


def test_an_interrupted_command_leaves_at_once_with_130(monkeypatch):
    """Once a command was interrupted it ends the process at once with 130, Ctrl-C ignored meanwhile: interpreter
    shutdown would end it with SIGINT (-2) after a KeyboardInterrupt raised inside an import, or after a further
    Ctrl-C. A library caller (no install) gets 130 back and keeps its handler (the negative control)."""
    import signal as signals

    from symmetry import interrupt

    def interrupted() -> int:
        raise KeyboardInterrupt

    exits: list[int] = []
    monkeypatch.setattr(interrupt, "_exit", exits.append)
    before = signals.getsignal(signals.SIGINT)
    try:
        monkeypatch.setattr(interrupt, "_installed", False)
        monkeypatch.setattr(interrupt, "_interrupted", False)
        assert interrupt.run(interrupted) == 130
        assert signals.getsignal(signals.SIGINT) is before and exits == []  # not installed: nothing changed
        monkeypatch.setattr(interrupt, "_phase", "starting")  # as install() leaves it
        monkeypatch.setattr(interrupt, "_installed", True)
        monkeypatch.setattr(interrupt, "_interrupted", False)
        interrupt.run(interrupted)
        assert exits == [130] and signals.getsignal(signals.SIGINT) == signals.SIG_IGN
    finally:
        signals.signal(signals.SIGINT, before)


def test_a_ctrl_c_inside_mains_imports_ends_at_once(monkeypatch):
    """Inside interrupt.importing() (torch loaded after the options parse) a Ctrl-C leaves at once, as during
    start-up, instead of raising KeyboardInterrupt inside an import (half-imported numpy then fails to load again).
    Negative control: the same signal outside the block raises KeyboardInterrupt."""
    from symmetry import interrupt

    left: list[str] = []
    monkeypatch.setattr(interrupt, "_leave", left.append)
    monkeypatch.setattr(interrupt, "_phase", "running")
    monkeypatch.setattr(interrupt, "_interrupted", False)
    with interrupt.importing():
        interrupt._handler(2, None)
    assert left == ["interrupted"] and interrupt._phase == "running"
    with pytest.raises(KeyboardInterrupt):
        interrupt._handler(2, None)
