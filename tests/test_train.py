"""Training, resuming, data-parallel training, evaluation, comparison and their command-line errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis import compare, evaluate
from analysis import train as train_mod
from analysis.config import TrainConfig
from analysis.models import build_model
from analysis.train import read_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    task="denoise",
    model="plain",
    width=4,
    depth=1,
    kernel_size=3,
    patch_size=24,
    batch_size=4,
    steps=6,
    data="skimage",
    max_images=4,
    val_images=1,
    val_crop=32,
    log_every=2,
    val_every=1000,
    ckpt_every=1000,
    device="cpu",
)


def _argv(cfg: dict) -> list[str]:
    out = []
    for key, value in cfg.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def _error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


# ---- training -------------------------------------------------------------------------


def test_short_training_run_lowers_the_loss(tmp_path):
    run = train({**TINY, "width": 8, "steps": 40, "lr": 3e-3, "val_every": 20, "out": str(tmp_path / "run")})
    log = pd.read_csv(run / "log.csv")
    assert list(log.columns) == ["step", "epoch", "loss", "lr", "val_psnr", "time_s"]
    assert log["step"].tolist() == list(range(2, 41, 2))
    assert log["loss"].iloc[-3:].mean() < 0.7 * log["loss"].iloc[:2].mean()
    val = log["val_psnr"].dropna()
    assert len(val) == 2 and val.iloc[-1] > val.iloc[0]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["steps"] == 40 and cfg["scale"] == 1 and cfg["model"] == "plain"
    state = read_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 40
    model = build_model("plain", group="rot4", in_channels=3, width=8, depth=1, kernel_size=3)
    model.load_state_dict(state["model"])  # the run's network is the public build_model's


def test_equivariant_model_trains_and_stays_quarter_turn_equivariant(tmp_path):
    run = train(
        {
            **TINY,
            "model": "equivariant",
            "group": "rot4",
            "width": 2,
            "steps": 4,
            "augment": "flip",
            "out": str(tmp_path / "eq"),
        }
    )
    metrics = evaluate.evaluate_run(run, group="rot4", max_images=1, crop=48, eq_images=1, eq_crop=32)
    assert metrics["model"] == "equivariant" and metrics["params"] > 0
    assert metrics["equivariance"]["worst"] < 1e-8  # exact for quarter turns
    assert set(metrics["equivariance"]["per_element"]) == {"e", "rot90", "rot180", "rot270"}


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    cfg = {**TINY, "steps": 8, "augment": "dih4", "ckpt_every": 3, "val_every": 4}
    full = train({**cfg, "out": str(tmp_path / "full")})
    part = train({**cfg, "out": str(tmp_path / "part")}, stop_at=4)
    assert read_checkpoint(part / "checkpoint.pt")["step"] == 4
    train({**cfg, "out": str(tmp_path / "part")}, resume=True)
    a, b = read_checkpoint(full / "checkpoint.pt"), read_checkpoint(part / "checkpoint.pt")
    assert a["step"] == b["step"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    la, lb = pd.read_csv(full / "log.csv"), pd.read_csv(part / "log.csv")
    cols = ["step", "epoch", "loss", "lr", "val_psnr"]
    pd.testing.assert_frame_equal(la[cols], lb[cols])


@pytest.mark.slow  # three processes (make test-slow)
def test_two_gloo_processes_match_one_process(tmp_path):
    cfg = {**TINY, "steps": 6, "log_every": 1, "val_images": 0}
    single = train({**cfg, "out": str(tmp_path / "one")})
    res = _run(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "analysis.train"]
        + _argv({**cfg, "out": str(tmp_path / "two")})
        + ["--quiet"]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = pd.read_csv(single / "log.csv"), pd.read_csv(tmp_path / "two" / "log.csv")
    assert one["step"].tolist() == two["step"].tolist() == list(range(1, 7))
    assert one["loss"].to_numpy() == pytest.approx(two["loss"].to_numpy(), rel=1e-4)
    wa = read_checkpoint(single / "checkpoint.pt")["model"]
    wb = read_checkpoint(tmp_path / "two" / "checkpoint.pt")["model"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-3, atol=1e-5)


# ---- command-line errors --------------------------------------------------------------


def test_run_directory_clash_needs_resume_or_overwrite(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = _argv({**TINY, "steps": 2, "out": out}) + ["--quiet"]
    assert train_mod.main(argv) == 0
    capsys.readouterr()
    assert train_mod.main(argv + ["--lr", "0.01"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "already holds a different run" in line and "lr" in line and "--resume" in line and "--overwrite" in line
    assert train_mod.main(argv + ["--lr", "0.01", "--resume"]) == 2
    assert "lr: 0.001 -> 0.01" in _error_line(capsys.readouterr().err)
    assert train_mod.main(argv + ["--lr", "0.01", "--overwrite"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 0.01
    # --resume of a finished run extends it when asked for more steps (identity unchanged)
    assert train_mod.main(["--out", out, "--resume", "--steps", "4", "--quiet"]) == 0
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 4


def test_bad_checkpoints_say_what_is_wrong(tmp_path, capsys):
    run = train({**TINY, "steps": 2, "out": str(tmp_path / "a")})
    # a checkpoint of another architecture: evaluate names the keys
    cfg = json.loads((run / "config.json").read_text())
    other = tmp_path / "b"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**cfg, "depth": 2, "out": str(other)}))
    (other / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes())
    assert evaluate.main([str(other), "--quiet"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert "different architecture" in line and "missing keys: body.1." in line
    # --init-from with a different width: shapes are listed
    argv = _argv({**TINY, "width": 6, "steps": 1, "out": str(tmp_path / "c")})
    assert train_mod.main(argv + ["--init-from", str(run / "checkpoint.pt"), "--quiet"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert "shape mismatch (checkpoint vs model): body.0.conv1.bias (5,) vs (8,)" in line
    # a corrupt file
    (other / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert evaluate.main([str(other), "--quiet"]) == 1
    assert "cannot read checkpoint" in _error_line(capsys.readouterr().err)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    real = train_mod.loss_fn

    def flaky(name, output, target):
        calls["n"] += 1
        loss = real(name, output, target)
        return loss * math.nan if calls["n"] == 5 else loss

    monkeypatch.setattr(train_mod, "loss_fn", flaky)
    out = tmp_path / "nan"
    argv = _argv({**TINY, "steps": 8, "ckpt_every": 3, "val_images": 0, "out": str(out)})
    assert train_mod.main(argv + ["--quiet"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert "loss became nan at step 5" in line and "(step 3) is kept" in line
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 3


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "deblur"}, "unknown task 'deblur'"),
        ({"model": "resnet"}, "unknown model 'resnet'"),
        ({"group": "rot4x"}, "unknown group 'rot4x'"),
        ({"task": "sr", "scale": 5}, "scale 5 is not supported"),
        ({"scale": 2}, "--scale applies to --task sr only"),
        ({"augment": "rot8"}, "quarter turns and flips"),
        ({"patch_size": 600}, "patch size 600 is larger than"),
        ({"task": "derain"}, "needs paired data"),
    ],
)
def test_bad_options_are_one_line_usage_errors(tmp_path, capsys, change, message):
    assert train_mod.main(_argv({**TINY, **change, "out": str(tmp_path / "x")})) == 2
    assert message in _error_line(capsys.readouterr().err)


@pytest.mark.slow  # in-process: test_fuzz_cli's train-out-is-a-file and eval-not-a-run
def test_cli_errors_in_a_subprocess_have_no_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _run(["-m", "analysis.train", "--out", str(blocker / "run"), "--steps", "1"])
    assert res.returncode == 2
    assert "not a writable directory" in _error_line(res.stderr)
    res = _run(["-m", "analysis.evaluate", str(tmp_path)])
    assert res.returncode == 2
    assert "not a run directory" in _error_line(res.stderr)


# ---- config files, evaluation, comparison ---------------------------------------------


def test_config_file_and_epochs(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**TINY, "steps": None, "epochs": 2, "lr": 0.002}))
    assert train_mod.main(["--config", str(path), "--out", str(tmp_path / "r"), "--seed", "3", "--quiet"]) == 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["lr"] == 0.002 and cfg["seed"] == 3 and cfg["epochs"] == 2 and cfg["steps"] == 2  # 2 * 4 / 4
    path.write_text(json.dumps({"learning_rate": 1}))
    assert train_mod.main(["--config", str(path), "--out", str(tmp_path / "s")]) == 2


def test_evaluate_and_compare_sample_adaptive_and_plain_runs(tmp_path, capsys):
    sa = train({**TINY, "model": "sa", "width": 2, "steps": 2, "out": str(tmp_path / "sa")})
    plain = train({**TINY, "steps": 2, "out": str(tmp_path / "plain")})
    for run in (sa, plain):
        argv = [str(run), "--group", "rot4", "--max-images", "2", "--crop", "48", "--eq-images", "1", "--eq-crop", "32"]
        assert evaluate.main(argv) == 0
    metrics = json.loads((sa / "metrics.json").read_text())
    for key in ("test_loss", "psnr", "ssim", "train_loss", "generalization_gap", "params", "time_per_step_s"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["equivariance"]["group"] == "rot4" and len(metrics["equivariance"]["per_element"]) == 4
    transforms = pd.read_csv(sa / "transforms.csv")
    assert list(transforms.columns) == ["name", "theta0", "theta0_deg", "cx", "cy"] and len(transforms) == 2
    assert not (plain / "transforms.csv").exists()
    capsys.readouterr()
    csv_path, md_path = tmp_path / "cmp.csv", tmp_path / "cmp.md"
    assert compare.main([str(sa), str(plain), str(tmp_path), "--csv", str(csv_path), "--markdown", str(md_path)]) == 0
    table = pd.read_csv(csv_path)
    assert table["model"].tolist() == ["sa", "plain"] and table["psnr"].notna().all()
    assert md_path.read_text().count("\n") == 4
    out = capsys.readouterr()
    assert "PSNR" in out.out and "not a run directory" in out.err


def test_malformed_options_are_one_line_usage_errors(tmp_path, capsys):
    assert train_mod.main(["--steps", "abc", "--out", str(tmp_path / "r")]) == 2
    assert "invalid int value: 'abc'" in _error_line(capsys.readouterr().err)
    assert train_mod.main(["--steps", "2", "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    assert "--steps or --epochs" in _error_line(capsys.readouterr().err)
    assert compare.main([str(tmp_path)]) == 2
    assert "none of the 1 path(s) is a readable run directory" in capsys.readouterr().err


# ---- the training loop (analysis.fit) ---------------------------------------------------


def _fit_setup(seed: int = 0):
    """A tiny network, batches that are a function of the step, and a step that also draws from the global RNG."""
    from symmetry.streams import torch_generator

    torch.manual_seed(seed)
    conv = torch.nn.Conv2d
    model = torch.nn.Sequential(conv(1, 4, 3, padding=1), torch.nn.ReLU(), conv(4, 1, 3, padding=1))

    def batches(k: int):
        x = torch.randn(4, 1, 8, 8, generator=torch_generator(seed, "batches", k))
        return x, x.roll(1, dims=-1)

    def step(net, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(net(x + 0.01 * torch.randn_like(x)), y)  # global RNG: must be resumed

    return model, step, batches


FP = {"config": "{}", "data": "d0", "seed": 0}


def _weights_after(tmp_path, name, interrupt=None, steps=6):
    """Train ``steps`` steps into ``tmp_path/name``; ``interrupt(k, phase)`` may raise KeyboardInterrupt once, after
    which the run is resumed from its checkpoint. Returns the final weights and the step of the checkpoint that the
    interrupt left."""
    from analysis.fit import fit
    from analysis.rundir import read_checkpoint

    run = tmp_path / name
    model, step, batches = _fit_setup()
    left = None
    if interrupt is None:
        fit(model, step, batches, steps=steps, lr=1e-2, run_dir=run, fingerprint=FP, ckpt_every=100)
    else:
        with pytest.raises(KeyboardInterrupt):
            fit(model, interrupt(step), batches, steps=steps, lr=1e-2, run_dir=run, fingerprint=FP, ckpt_every=2)
        left = read_checkpoint(run / "checkpoint.pt")["step"]
        model, step, batches = _fit_setup()
        torch.manual_seed(1234)  # the resumed process starts from another global RNG state
        fit(model, step, batches, steps=steps, lr=1e-2, run_dir=run, fingerprint=FP, resume=True, ckpt_every=2)
    return {k: v.clone() for k, v in model.state_dict().items()}, left


def _assert_same(a, b):
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_interrupt_between_optimizer_step_and_counter_resumes_bit_identically(tmp_path):
    reference, _ = _weights_after(tmp_path, "full")
    calls = {"n": 0}

    def hook(optimizer, args, kwargs):  # runs after the update, before fit moves its counter
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(hook)
    try:
        weights, left = _weights_after(tmp_path, "after-update", interrupt=lambda step: step)
    finally:
        handle.remove()
    assert left == 3  # the update of step 3 is in the weights: the checkpoint says 3 steps, not 2
    _assert_same(reference, weights)


def test_interrupt_inside_the_step_before_the_update_resumes_bit_identically(tmp_path):
    reference, _ = _weights_after(tmp_path, "full")

    def interrupting(step):
        calls = {"n": 0}

        def wrapped(net, batch):
            calls["n"] += 1
            loss = step(net, batch)  # the global RNG has moved: resume must rewind it
            if calls["n"] == 4:
                raise KeyboardInterrupt
            return loss

        return wrapped

    weights, left = _weights_after(tmp_path, "before-update", interrupt=interrupting)
    assert left == 3
    _assert_same(reference, weights)


def test_sigint_is_deferred_to_the_end_of_the_step(tmp_path):
    import signal

    reference, _ = _weights_after(tmp_path, "full")

    def signalling(step):
        calls = {"n": 0}

        def wrapped(net, batch):
            calls["n"] += 1
            if calls["n"] == 2:
                os.kill(os.getpid(), signal.SIGINT)
            return step(net, batch)

        return wrapped

    weights, left = _weights_after(tmp_path, "sigint", interrupt=signalling)
    assert left == 2  # step 2 finished, then the interrupt took effect
    _assert_same(reference, weights)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    from analysis.fit import fit
    from symmetry.errors import UsageError

    model, step, batches = _fit_setup()
    fit(model, step, batches, steps=2, run_dir=tmp_path, fingerprint=FP)
    for other, what in (({**FP, "seed": 1}, "seed: 0 -> 1"), ({**FP, "data": "d1"}, "training data differ")):
        with pytest.raises(UsageError, match=f"belongs to another run.*{what}.*--overwrite"):
            fit(model, step, batches, steps=4, run_dir=tmp_path, fingerprint=other, resume=True)


def test_cli_resume_refuses_foreign_checkpoints_and_a_missing_config(tmp_path, capsys):
    base = {**TINY, "steps": 2, "val_images": 0}
    assert train_mod.main(_argv({**base, "out": str(tmp_path / "a")}) + ["--quiet"]) == 0
    assert train_mod.main(_argv({**base, "seed": 5, "out": str(tmp_path / "b")}) + ["--quiet"]) == 0
    (tmp_path / "b" / "checkpoint.pt").write_bytes((tmp_path / "a" / "checkpoint.pt").read_bytes())
    capsys.readouterr()
    assert train_mod.main(["--out", str(tmp_path / "b"), "--resume", "--steps", "4", "--quiet"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "belongs to another run" in line and "seed: 0 -> 5" in line and "--overwrite" in line
    (tmp_path / "a" / "config.json").unlink()
    assert train_mod.main(_argv({**base, "steps": 4, "out": str(tmp_path / "a")}) + ["--resume", "--quiet"]) == 2
    assert "no config.json" in _error_line(capsys.readouterr().err)


def test_a_crafted_pickle_checkpoint_does_not_run(tmp_path, capsys):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Evil()}, protocol=2))
    argv = _argv({**TINY, "steps": 1, "val_images": 0, "out": str(tmp_path / "r")})
    assert train_mod.main(argv + ["--init-from", str(path), "--quiet"]) == 1
    assert "cannot read checkpoint" in _error_line(capsys.readouterr().err)
    assert not marker.exists()


def test_registry_builds_through_build_model():
    from analysis.registry import build_network, network_names, register

    torch.manual_seed(0)
    a = build_network("equivariant", group="rot4", in_channels=1, width=2, depth=1, kernel_size=3)
    torch.manual_seed(0)
    b = build_model("equivariant", group="rot4", in_channels=1, width=2, depth=1, kernel_size=3)
    _assert_same(a.state_dict(), b.state_dict())

    @register("fit-test-identity")
    def _identity(**kwargs):
        return torch.nn.Identity()

    assert "fit-test-identity" in network_names()
    assert isinstance(build_network("fit-test-identity"), torch.nn.Identity)
    with pytest.raises(Exception, match="unknown model kind 'resnet'"):
        build_network("resnet")


# ---- parse-time checks of every option --------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", "-1"], "--seed must be a finite number in [0,"),
        (["--epochs", "inf"], "--epochs must be a finite number"),
        (["--lr-step", "-1"], "--lr-step must be a finite number in [1,"),
        (["--width", "1000000"], "--width must be a finite number in [1, 1024]"),
        (["--kernel-size", "10001"], "--kernel-size must be a finite number in [1, 63]"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr-gamma", "2"], "--lr-gamma must be a finite number in [1e-09, 1]"),
    ],
)
def test_out_of_range_options_are_one_line_usage_errors(tmp_path, capsys, argv, message):
    assert train_mod.main(["--out", str(tmp_path / "r"), *argv]) == 2
    assert message in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"depth": "abc"}, "depth (--depth) must be an integer, got 'abc'"),
        ({"seed": 1.5}, "seed (--seed) must be an integer, got 1.5"),
        ({"lr": "fast"}, "lr (--lr) must be a number"),
        ({"amp": 1}, "amp (--amp) must be true or false"),
        ({"group": 4}, "group (--group) must be text"),
        ({"model_options": []}, "must be a JSON object"),
    ],
)
def test_wrongly_typed_config_keys_are_one_line_usage_errors(tmp_path, capsys, options, message):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(options))
    assert train_mod.main(["--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert message in _error_line(capsys.readouterr().err)
    # the same in a stored config.json that --resume reads
    run = tmp_path / "stored"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(options))
    assert train_mod.main(["--out", str(run), "--resume"]) == 2
    assert message in _error_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train({**TINY, "steps": 2, "val_images": 0, "out": str(tmp_path_factory.mktemp("tiny") / "run")})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--crop", "0"], "--crop must be an integer >= 1"),
        (["--crop", "-3"], "--crop must be an integer >= 1"),
        (["--eq-crop", "0"], "--eq-crop must be an integer >= 8"),
        (["--eq-images", "0"], "--eq-images must be an integer >= 1"),
        (["--mesh", "1e-9"], "--mesh must be a finite number in [0.05, 16.0]"),
        (["--mesh", "nan"], "--mesh must be a finite number"),
    ],
)
def test_evaluate_option_ranges(tiny_run, capsys, argv, message):
    before = sorted(p.name for p in tiny_run.iterdir())
    assert evaluate.main([str(tiny_run), *argv, "--quiet"]) == 2
    assert message in _error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tiny_run.iterdir()) == before


def test_damaged_log_and_metrics_are_named(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    log = run / "log.csv"
    good = log.read_text()
    log.write_text("step,epoch,loss\nabc,1,x\n")
    assert evaluate.main([str(run), "--max-images", "1", "--crop", "32", "--eq-crop", "16", "--quiet"]) == 1
    assert "cannot read" in (line := _error_line(capsys.readouterr().err)) and "log.csv" in line
    log.write_text(good)
    (run / "metrics.json").write_text("[1, 2]")
    assert compare.main([str(run), str(tiny_run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "holds a JSON list, not an object" in err and "not a run directory" not in err


# ---- model options, --init-from RUN, --average (issue 9) --------------------------------

EQ_TINY = {**TINY, "width": 2, "steps": 2, "val_images": 0, "group": "rot4"}


def _eq_inputs(n: int = 1, size: int = 20) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_basis_tail_match_flags_reach_build_model(tmp_path):
    from analysis.rundir import load_run

    run = train(
        {**EQ_TINY, "model": "tl", "model_options": {"basis": "bicubic", "tail": "plain"}, "out": str(tmp_path / "a")}
    )
    assert (
        train_mod.main(
            _argv({**EQ_TINY, "model": "tl", "out": str(tmp_path / "b")})
            + ["--basis", "bicubic", "--tail", "plain", "--quiet"]
        )
        == 0
    )
    a, b = (json.loads((tmp_path / n / "config.json").read_text()) for n in ("a", "b"))
    assert a["model_options"] == b["model_options"] == {"basis": "bicubic", "tail": "plain"}
    _, model, _ = load_run(run)
    assert model.basis == "bicubic"
    # the defaults are not stored: --basis fourier is the same run as no flag
    assert (
        train_mod.main(
            _argv({**EQ_TINY, "model": "tl", "out": str(tmp_path / "c")}) + ["--basis", "fourier", "--quiet"]
        )
        == 0
    )
    assert json.loads((tmp_path / "c" / "config.json").read_text())["model_options"] == {}
    # --match channels: the plain baseline has |G| * width channels
    assert train_mod.main(_argv({**EQ_TINY, "out": str(tmp_path / "d")}) + ["--match", "channels", "--quiet"]) == 0
    _, plain, _ = load_run(tmp_path / "d")
    assert plain.head.out_channels == 4 * EQ_TINY["width"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--basis", "spline"], "--basis must be one of fourier, bicubic"),
        (["--tail", "round"], "--tail must be one of equivariant, plain"),
        (["--match", "flops"], "--match must be one of parameters, channels"),
        (["--model", "equivariant", "--match", "channels"], "--match applies to --model plain only"),
        (["--average", "rot8"], "--average needs a grid-exact group"),
        (["--average", "rot4x"], "unknown group 'rot4x'"),
    ],
)
def test_bad_model_options_are_one_line_usage_errors(tmp_path, capsys, argv, message):
    assert train_mod.main(_argv({**EQ_TINY, "out": str(tmp_path / "x")}) + argv) == 2
    assert message in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "x" / "config.json").exists()


@pytest.fixture(scope="module")
def tl_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tl")
    return train({**EQ_TINY, "model": "tl", "steps": 3, "lr": 0.05, "out": str(root / "tl")})


def test_sa_from_a_tl_run_starts_as_that_run(tl_run, tmp_path):
    """The authors' recipe: sa --init-from <tl run> computes exactly the tl network at its start."""
    from analysis.rundir import load_run

    _, tl, _ = load_run(tl_run)
    assert any((p - 0).abs().max() > 0 for n, p in tl.named_parameters() if "theta" in n or "log" in n)
    cfg = TrainConfig.from_dict({**EQ_TINY, "model": "sa", "init_from": str(tl_run), "out": str(tmp_path / "sa")})
    cfg = cfg.resolved()
    torch.manual_seed(1)
    sa = train_mod.build_from_config(cfg)
    left = train_mod.init_from_run(sa, cfg)
    assert left and all(k.startswith("hyper.") for k in left)
    x = _eq_inputs(2)
    with torch.no_grad():
        assert torch.allclose(sa.eval()(x), tl(x), atol=1e-6, rtol=0)
    # the init source is part of the run's identity and fingerprint
    assert (
        train_mod.main(
            _argv({**EQ_TINY, "model": "sa", "out": str(tmp_path / "r")}) + ["--init-from", str(tl_run), "--quiet"]
        )
        == 0
    )
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["init_from"] == str(tl_run)
    assert str(tl_run) in read_checkpoint(tmp_path / "r" / "checkpoint.pt")["fingerprint"]["config"]


def test_init_from_refuses_other_runs_with_one_line(tl_run, tmp_path, capsys):
    base = _argv({**EQ_TINY, "model": "sa", "out": str(tmp_path / "x")})
    # another group, another basis, another kind
    assert (
        train_mod.main(
            _argv({**EQ_TINY, "model": "sa", "group": "rot8", "out": str(tmp_path / "g")})
            + ["--init-from", str(tl_run)]
        )
        == 2
    )
    assert "is a run with group 'rot4', this run has 'rot8'" in _error_line(capsys.readouterr().err)
    assert train_mod.main(base + ["--basis", "bicubic", "--init-from", str(tl_run)]) == 2
    assert "is a run with basis 'fourier', this run has 'bicubic'" in _error_line(capsys.readouterr().err)
    assert (
        train_mod.main(
            _argv({**EQ_TINY, "model": "equivariant", "out": str(tmp_path / "e")}) + ["--init-from", str(tl_run)]
        )
        == 2
    )
    assert "is a 'tl' run; a 'equivariant' model starts from a 'equivariant' run" in _error_line(
        capsys.readouterr().err
    )
    # a missing run, a folder without config.json, a damaged checkpoint
    assert train_mod.main(base + ["--init-from", str(tmp_path / "nowhere")]) == 2
    assert "does not exist; name a run directory" in _error_line(capsys.readouterr().err)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_mod.main(base + ["--init-from", str(empty)]) == 2
    assert "not a run directory (no config.json)" in _error_line(capsys.readouterr().err)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tl_run, broken)
    (broken / "checkpoint.pt").write_bytes(b"garbage")
    assert train_mod.main(base + ["--init-from", str(broken)]) == 1
    assert "cannot read checkpoint" in _error_line(capsys.readouterr().err)
    (broken / "checkpoint.pt").unlink()
    assert train_mod.main(base + ["--init-from", str(broken)]) == 1
    assert "holds no checkpoint.pt" in _error_line(capsys.readouterr().err)


def test_average_trains_an_exactly_equivariant_plain_net_and_evaluate_reports_its_cost(tmp_path):
    from analysis.equivariance import equivariance_error, summarize
    from analysis.rundir import load_run

    run = train({**EQ_TINY, "average": "dih4", "out": str(tmp_path / "avg")})
    _, model, _ = load_run(run)
    assert model.cost_factor == 8
    eq = equivariance_error(model, _eq_inputs(1, 24), "dih4", normalisation="learned")
    assert summarize(eq, "learned")["worst"] < 1e-5
    m = evaluate.evaluate_run(run, max_images=1, crop=32, eq_images=1, eq_crop=24, group="dih4")
    assert m["average"]["cost_factor"] == 8 and m["average"]["group"] == "dih4"
    assert m["equivariance"]["learned"]["worst"] < 1e-5


def test_evaluate_reports_both_normalisations_and_an_evaluation_time_average(tiny_run, capsys):
    argv = [
        str(tiny_run),
        "--group",
        "rot4",
        "--max-images",
        "1",
        "--crop",
        "32",
        "--eq-images",
        "1",
        "--eq-crop",
        "24",
    ]
    assert evaluate.main(argv + ["--quiet"]) == 0
    m = json.loads((tiny_run / "metrics.json").read_text())
    eq = m["equivariance"]
    assert set(eq["normalisations"]) == {"output", "learned", "skip"} and eq["normalisation"] == "output"
    assert eq["skip"]["worst"] < 1e-12  # a denoiser's skip is the identity: exactly equivariant
    assert eq["worst"] == eq["output"]["worst"]
    # a plain residual denoiser: small relative to the output, clearly not equivariant relative to what it learns
    assert eq["learned"]["worst"] > 1e-2 and eq["learned"]["worst"] > 5 * eq["output"]["worst"]
    assert m["average"] is None and m["time_per_image_s"] > 0
    assert evaluate.main(argv + ["--average", "rot4", "--quiet"]) == 0
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["average"]["cost_factor"] == 4 and m["average"]["bare_time_per_image_s"] > 0
    assert m["equivariance"]["learned"]["worst"] < 1e-5
    assert evaluate.main(argv + ["--average", "rot8"]) == 2
    assert "--average needs a grid-exact group" in _error_line(capsys.readouterr().err)
