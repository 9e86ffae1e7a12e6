"""The measurement command line and its checkpoint: nothing a user names executes, stale sums are never reused."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from symmetry.measure import main

SMALL = ["--radius", "4", "--windows", "8", "--features", "16", "--permutations", "20", "--bootstrap", "10"]
SMALL += ["--mesh", "1", "--group", "flip", "--quiet", "--device", "cpu"]


def write_png(path, seed: int, size: int = 24) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        write_png(root / f"im{i}.png", seed=i)
    return root


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


class _Payload:
    """Unpickling this object would call ``open(marker, "w")``: a file appears if the checkpoint is executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_crafted_checkpoint_does_not_execute(folder, tmp_path, capsys, writer):
    marker = tmp_path / "pwned"
    bad = tmp_path / "run.ckpt"
    payload = {"version": 2, "fingerprint": _Payload(str(marker))}
    if writer == "pickle":
        bad.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, bad)
    code = main(["--dataset", f"folder:{folder}", *SMALL, "--checkpoint", str(bad)])
    assert code == 1
    assert "checkpoint" in one_error_line(capsys)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [[1, 2, 3], {"version": 2, "fingerprint": "x"}, {"version": 99}, "text"],
    ids=["list", "missing-keys", "version", "string"],
)
def test_malformed_checkpoint_is_one_line_data_error(folder, tmp_path, capsys, content):
    bad = tmp_path / "run.ckpt"
    torch.save(content, bad)
    assert main(["--dataset", f"folder:{folder}", *SMALL, "--checkpoint", str(bad)]) == 1
    assert "checkpoint" in one_error_line(capsys)


def test_same_path_for_checkpoint_and_json_is_refused(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--dataset", f"folder:{folder}", *SMALL, "--checkpoint", str(out), "--json", str(out)]) == 2
    assert "same file" in one_error_line(capsys)
    assert not out.exists()


def test_rerun_after_images_changed_recomputes(folder, tmp_path, capsys):
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "a.json"
    args = ["--dataset", f"folder:{folder}", *SMALL, "--checkpoint", str(ckpt)]
    assert main([*args, "--json", str(out)]) == 0
    first = json.loads(out.read_text())
    assert torch.load(ckpt, weights_only=True)["finished"] is True

    # unchanged images: the finished checkpoint is reused, and gives the same numbers
    assert main([*args, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["rows"] == first["rows"]

    # same size and modification time, other pixels: the content hash notices, and the run recomputes
    target = folder / "im1.png"
    stat = target.stat()
    write_png(target, seed=99)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert main([*args, "--json", str(out)]) == 0
    changed = json.loads(out.read_text())["rows"]
    assert [r["symmetry_error"] for r in changed] != [r["symmetry_error"] for r in first["rows"]]

    # a fresh run on the changed images gives that result: the estimates exactly; the null's quantiles to rounding
    # (a checkpoint folds the images into the null sums, a fresh run of a few images reads its null off Gram
    # matrices: the same sums added in another order)
    fresh = tmp_path / "fresh.json"
    assert main(["--dataset", f"folder:{folder}", *SMALL, "--json", str(fresh)]) == 0
    again = json.loads(fresh.read_text())["rows"]
    assert [r["symmetry_error"] for r in again] == [r["symmetry_error"] for r in changed]
    assert [r["p_value"] for r in again] == [r["p_value"] for r in changed]
    for key in ("null_q95", "ci_low", "ci_high"):
        np.testing.assert_allclose([r[key] for r in again], [r[key] for r in changed], rtol=1e-12, atol=1e-18)


def test_unfinished_checkpoint_of_other_options_is_refused(folder, tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    assert main(["--dataset", f"folder:{folder}", *SMALL, "--checkpoint", str(ckpt)]) == 0
    state = torch.load(ckpt, weights_only=True)
    state["finished"] = False
    torch.save(state, ckpt)
    capsys.readouterr()
    assert main(["--dataset", f"folder:{folder}", *SMALL, "--channels", "rgb", "--checkpoint", str(ckpt)]) == 2
    assert "different or changed" in one_error_line(capsys)


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--permutations", "0"], "--permutations"),
        (["--permutations", "19"], "between 20 and 1,000,000 (a p-value below 0.05 needs >= 20)"),
        (["--permutations", "20", "--alpha", "0.01"], "can never fall below"),
        (["--alpha", "5"], "--alpha"),
        (["--bandwidth", "inf"], "--bandwidth"),
        (["--bandwidth", "nan"], "--bandwidth"),
        (["--bandwidth", "0"], "--bandwidth"),
        (["--bandwidth", "1000"], "at most 100"),
        (["--bandwidth", "wide"], "'median' or a number in standardised units"),
        (["--mesh", "1e-9"], "mesh"),
        (["--windows", "1e9"], "--windows"),
        (["--windows", "1000000000"], "--windows"),
        (["--group", "rot4,rot4"], "repeat"),
        (["--max-images", "-1"], "--max-images"),
    ],
)
def test_silently_wrong_settings_are_refused(folder, capsys, options, fragment):
    assert main(["--dataset", f"folder:{folder}", *SMALL, *options]) == 2
    assert fragment in one_error_line(capsys)


def test_constant_images_have_no_median_bandwidth(tmp_path, capsys):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(2):
        Image.fromarray(np.full((24, 24), 100 + i, dtype=np.uint8)).save(root / f"f{i}.png")
    assert main(["--dataset", f"folder:{root}", *SMALL]) == 1
    assert "constant" in one_error_line(capsys)


def test_several_groups_and_radii_in_one_run_with_one_verdict_each(folder, tmp_path, capsys):
    out, plot = tmp_path / "r.json", tmp_path / "profile.png"
    args = ["--dataset", f"folder:{folder}", *SMALL, "--group", "rot4,flip,flipud,dih4", "--radius", "3,5"]
    assert main([*args, "--json", str(out), "--plot", str(plot)]) == 0
    report = json.loads(out.read_text())
    assert [v["group"] for v in report["verdicts"]] == ["rot4", "flip", "flipud", "dih4"]
    elements = [r for r in report["rows"] if r["statistic"] not in ("worst", "mean")]
    assert {r["radius"] for r in elements} == {3.0, 5.0}
    assert {r["mesh"] for r in elements} == {3 / 8, 5 / 8}  # --mesh 1 is for radius 8 and scales with the radius
    assert len(report["meta"]["bandwidth_per_radius"]) == 2  # the median rule: one kernel per radius, both stated
    assert len(elements) == 2 * (3 + 1 + 1 + 7) and report["meta"]["tests"] == 4  # one test per group
    p = np.array([r["p_value"] for r in elements])
    adjusted = np.array([r["p_adjusted"] for r in elements])
    assert (adjusted >= p - 1e-12).all()
    from symmetry.estimators import holm

    group_p = [v["p_value"] for v in report["verdicts"]]
    assert [v["p_adjusted"] for v in report["verdicts"]] == pytest.approx(list(holm(group_p)))
    for v in report["verdicts"]:  # one threshold per group: above its smallest p, never worse than Bonferroni
        own = p[[r["group"] == v["group"] for r in elements]]
        assert own.min() - 1e-12 <= v["p_value"] <= min(1.0, len(own) * own.min()) + 1e-12
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fixed_kernel_is_stated_in_the_header_and_the_json(folder, tmp_path, capsys):
    out = tmp_path / "r.json"
    loud = [a for a in SMALL if a != "--quiet"]
    assert main(["--dataset", f"folder:{folder}", *loud, "--bandwidth", "0.2", "--json", str(out)]) == 0
    assert "fixed kernel sigma = 0.2 standardised" in " ".join(capsys.readouterr().out.split())
    meta = json.loads(out.read_text())["meta"]
    assert meta["bandwidth_mode"] == "fixed" and meta["bandwidth_std"] == pytest.approx(0.2)
    assert meta["bandwidth"] == pytest.approx(0.2 * np.sqrt(np.pi) * 4)  # sigma = s * sqrt(pi) * radius
    assert main(["--dataset", f"folder:{folder}", *loud, "--bandwidth", "median", "--json", str(out)]) == 0
    assert "median-rule kernel (per dataset)" in " ".join(capsys.readouterr().out.split())
    assert json.loads(out.read_text())["meta"]["bandwidth_mode"] == "median"


def test_progress_bar_does_not_change_the_numbers(folder):
    import symmetry

    options = dict(radius=4, windows=8, features=16, permutations=20, bootstrap=0, mesh=1.0, device="cpu")
    with_bar = symmetry.measure_dataset(f"folder:{folder}", "flip", progress=True, **options)
    without = symmetry.measure_dataset(f"folder:{folder}", "flip", progress=False, **options)
    assert with_bar.to_dict()["rows"] == without.to_dict()["rows"]  # NaN intervals (no bootstrap) as None
