"""Fuzz table, memory rows (issue 23): options each within their limits whose combination cannot fit in memory.

The rows run like those of tests/test_fuzz_cli.py (its scratch folder, watchdog and checks, imported from there):
``main(argv)`` in a folder holding three tiny images, two pre-existing outputs and, where the row needs one, a
trained run. Each must end with exit code 1 or 2, exactly one ``error:`` line naming the memory, no traceback,
every pre-existing file byte-for-byte unchanged (with ``--overwrite`` the old run survives the refusal), and
within :data:`REFUSE_S` seconds of ``main`` being called: the budget refuses before anything is allocated.
The watchdog caps the address space at 4 GiB above the test process; the budget honours that cap (it is what
``ulimit -v`` sets), so a row that asks for more is refused in-process on any machine.
"""

from __future__ import annotations

import importlib
import time

import pytest
from test_fuzz_cli import (  # the fuzz table's scratch folder, watchdog and checks
    CLIS,
    MEASURE,
    TRAIN,
    _snapshot,
    _subprocess,
    _workspace,
    assert_clean_failure,
    error_lines,
    run_in_process,
    trained_run,  # noqa: F401 - a fixture
)

REFUSE_S = 5.0  # the budget's refusal, measured from main's call (the imports come before it)
MEMORY = "would need about"  # every budget refusal says how much


def _with(base: list[str], **options: str) -> list[str]:
    """``base`` with ``--name value`` options replaced or added."""
    argv = list(base)
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


BIG_TRAIN = dict(width="1024", depth="256")
ROT8 = dict(model="equivariant", group="rot8", width="1024")

CASES = [
    pytest.param("measure", _with(MEASURE, permutations="1000000", features="65536"), (), id="measure-perms-feat"),
    pytest.param("measure", _with(MEASURE, bootstrap="1000000", features="512"), (), id="measure-bootstrap-1e6"),
    pytest.param(
        "measure",
        _with(MEASURE, windows="100000", features="512", radius="8", mesh="2,1,0.5", json="out.json"),
        (),
        id="measure-windows-1e5",
    ),
    pytest.param(
        "measure", _with(MEASURE, features="512", max_memory="1M", csv="out.csv"), (), id="measure-max-memory-1M"
    ),
    pytest.param("train", _with(TRAIN, **BIG_TRAIN), (), id="train-width-1024-depth-256"),
    pytest.param("train", _with(TRAIN, **ROT8), (), id="train-rot8-width-1024"),
    pytest.param("train", _with(TRAIN, out="run", **BIG_TRAIN) + ["--overwrite"], ("run",), id="train-big-overwrite"),
    pytest.param("train", _with(TRAIN, out="run", **ROT8) + ["--overwrite"], ("run",), id="train-rot8-overwrite"),
    pytest.param("train", _with(TRAIN, out="run", **BIG_TRAIN), ("run",), id="train-big-over-a-run"),
    pytest.param("train", _with(TRAIN, width="64", max_memory="1M"), (), id="train-max-memory-1M"),
]


@pytest.mark.parametrize("cli, argv, needs", CASES)
def test_a_run_that_cannot_fit_is_refused_before_it_starts(cli, argv, needs, tmp_path, monkeypatch, capsys, request):
    trained = request.getfixturevalue("trained_run") if "run" in needs else None
    _workspace(tmp_path, needs, trained)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    importlib.import_module(CLIS[cli])  # the clock starts at main's call, after the imports
    start = time.perf_counter()
    code, stderr = run_in_process(cli, list(argv), capsys)
    seconds = time.perf_counter() - start
    after = _snapshot(tmp_path)
    assert_clean_failure(code, stderr)
    assert MEMORY in error_lines(stderr)[0], stderr
    assert not [p for p in before if after.get(p) != before[p]], "pre-existing files changed"
    assert not set(after) - set(before), f"new files: {sorted(set(after) - set(before))}"
    assert seconds < REFUSE_S, f"refused after {seconds:.1f} s"


@pytest.mark.parametrize(
    "cli, argv",
    [
        ("measure", _with(MEASURE, max_memory="abc")),
        ("measure", _with(MEASURE, max_memory="0")),
        ("train", _with(TRAIN, max_memory="-1G")),
    ],
    ids=["measure-max-memory-abc", "measure-max-memory-0", "train-max-memory-neg"],
)
def test_a_bad_max_memory_is_one_error_line(cli, argv, tmp_path, monkeypatch, capsys):
    _workspace(tmp_path, (), None)
    monkeypatch.chdir(tmp_path)
    code, stderr = run_in_process(cli, argv, capsys)
    assert_clean_failure(code, stderr)
    assert "--max-memory" in error_lines(stderr)[0]


def test_the_base_options_fit(tmp_path, monkeypatch, capsys):
    """Negative control: the rows above differ from bases that run (measure here; train in trained_run)."""
    _workspace(tmp_path, (), None)
    monkeypatch.chdir(tmp_path)
    code, stderr = run_in_process("measure", _with(MEASURE, json="base.json"), capsys)
    assert code == 0 and (tmp_path / "base.json").is_file(), stderr[-1000:]


@pytest.mark.parametrize(
    "module, argv",
    [
        ("symmetry.measure", ["--permutations", "1000000", "--features", "65536", "--quiet"]),
        pytest.param("analysis.train", ["--width", "1024", "--depth", "256", "--out", "big"], marks=pytest.mark.slow),
    ],
    ids=["measure", "train"],
)
def test_a_user_sees_one_memory_line(module, argv, tmp_path):
    """The issue's own commands, as a user types them (default dataset, default device)."""
    _workspace(tmp_path, (), None)
    res = _subprocess(module, argv, tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert len(error_lines(res.stderr)) == 1 and MEMORY in error_lines(res.stderr)[0]
    assert not (tmp_path / "big").exists()
