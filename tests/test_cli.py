"""The command line: every bad input exits with a one-line message, the right code and no traceback."""

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

SMALL = ["--radius", "4", "--windows", "16", "--features", "32", "--permutations", "20", "--bootstrap", "20", "--quiet"]


def run(*args, cwd=None):
    """``(exit code, stdout, stderr)`` of ``python -m symmetry.measure ARGS``, run in this process (a subprocess per
    call cost the suite a torch import each; ``test_a_user_sees_one_line_and_no_traceback`` runs real ones)."""
    from symmetry.measure import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # --help
            code = exc.code if isinstance(exc.code, int) else 0
    return code, out.getvalue(), err.getvalue()


def test_the_module_runs_as_a_program():
    proc = subprocess.run([sys.executable, "-m", "symmetry.measure", "--list-groups"], capture_output=True, text=True)
    assert proc.returncode == 0 and "dih4" in proc.stdout


def write_png(path, size=(40, 32), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size[1], size[0])) * 255).astype(np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(4):
        write_png(root / f"im{i}.png", seed=i)
    return root


def assert_clean_error(code, err, expected_code, *fragments):
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:") or "error:" in line]
    assert lines, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_success_writes_json_and_csv(folder, tmp_path):
    out = tmp_path / "out" / "report.json"
    csv = tmp_path / "report.csv"
    code, stdout, err = run(
        "--dataset", f"folder:{folder}", "--group", "rot4", "--mesh", "1", "--json", str(out), "--csv", str(csv), *SMALL
    )
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["group"] == "rot4" and data["meta"]["images"] == 4
    assert {r["statistic"] for r in data["rows"]} == {"rot90", "rot180", "rot270", "worst", "mean"}
    assert csv.read_text().startswith("dataset,group,mesh,statistic")


def test_table_is_printed(folder):
    code, stdout, err = run("--dataset", f"folder:{folder}", "--group", "flip", "--mesh", "2,1", *SMALL[:-1])
    assert code == 0, err
    assert "worst" in stdout and "p-value" in stdout and "eps0" in stdout


def test_lists_and_help():
    code, out, _ = run("--list-groups")
    assert code == 0 and "dih4" in out and "rot90*flip" in out
    code, out, _ = run("--list-datasets")
    assert code == 0 and "skimage" in out and "div2k" in out
    code, out, _ = run("--help")
    assert code == 0 and "--mesh" in out and "--skip-bad" in out


@pytest.mark.parametrize(
    "args,expected_code,fragment",
    [
        (["--group", "hexagon"], 2, "valid names"),
        (["--mesh", "0"], 2, "mesh sizes must be > 0"),
        (["--mesh", "1,-2"], 2, "mesh sizes must be > 0"),
        (["--mesh", "a,b"], 2, "--mesh"),
        (["--radius", "0"], 2, "radius must be > 0"),
        (["--device", "tpu"], 2, "device"),
    ],
)
def test_usage_errors(folder, args, expected_code, fragment):
    code, _, err = run("--dataset", f"folder:{folder}", *SMALL, *args)
    assert code == expected_code and "Traceback" not in err and fragment in err, err


def test_missing_and_empty_dataset(tmp_path):
    code, _, err = run("--dataset", f"folder:{tmp_path / 'nope'}", *SMALL)
    assert_clean_error(code, err, 1, "nope")
    (tmp_path / "empty").mkdir()
    code, _, err = run("--dataset", f"folder:{tmp_path / 'empty'}", *SMALL)
    assert_clean_error(code, err, 1, "empty")
    code, _, err = run("--dataset", "no-such-set", *SMALL)
    assert code in (1, 2) and "Traceback" not in err and "skimage" in err


def test_div2k_root_without_folders(tmp_path):
    code, _, err = run("--dataset", "div2k", "--data-root", str(tmp_path), *SMALL)
    assert_clean_error(code, err, 1, "DIV2K_train_HR", "--download")


def test_corrupt_image_fails_or_is_skipped(folder, tmp_path):
    bad = folder / "broken.png"
    bad.write_bytes((folder / "im0.png").read_bytes()[:60])
    code, _, err = run("--dataset", f"folder:{folder}", "--mesh", "1", *SMALL)
    assert_clean_error(code, err, 1, "broken.png", "--skip-bad")
    out = tmp_path / "r.json"
    code, _, err = run("--dataset", f"folder:{folder}", "--mesh", "1", "--skip-bad", "--json", str(out), *SMALL)
    assert code == 0, err
    meta = json.loads(out.read_text())["meta"]
    assert meta["skipped"] == 1 and meta["images"] == 4


def test_image_smaller_than_window(tmp_path):
    root = tmp_path / "tiny"
    root.mkdir()
    for i in range(3):
        write_png(root / f"t{i}.png", size=(8, 8), seed=i)
    code, _, err = run("--dataset", f"folder:{root}", "--mesh", "1", *SMALL)
    assert_clean_error(code, err, 1, "smaller than a window")


def test_nan_pixels(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    root = tmp_path / "nan"
    root.mkdir()
    for i in range(3):
        arr = np.random.default_rng(i).random((32, 32)).astype(np.float32)
        if i == 1:
            arr[5, 5] = np.nan
        tifffile.imwrite(root / f"f{i}.tif", arr)
    code, _, err = run("--dataset", f"folder:{root}", "--mesh", "1", *SMALL)
    assert_clean_error(code, err, 1, "f1.tif")


def test_unwritable_output_is_refused_before_work(folder, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run("--dataset", f"folder:{folder}", "--json", str(blocker / "out.json"), *SMALL)
    assert_clean_error(code, err, 2, "cannot write")
    assert blocker.read_text() == "x"


def test_existing_output_survives_a_failed_run(folder, tmp_path):
    out = tmp_path / "keep.json"
    out.write_text("{}")
    code, _, err = run("--dataset", f"folder:{folder}", "--group", "bogus", "--json", str(out), *SMALL)
    assert code == 2 and out.read_text() == "{}"
