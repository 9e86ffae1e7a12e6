"""Train a restoration network: ``python -m analysis.train`` or :func:`train` from Python.

A run lives in one directory (``--out``, files named in :mod:`analysis.rundir`): ``config.json`` (the resolved
:class:`analysis.config.TrainConfig`), ``log.csv`` (``step, epoch, loss, lr, val_psnr, time_s``: mean training loss
since the previous row, learning rate of the step, validation PSNR in dB where validated, cumulative training
seconds) and ``checkpoint.pt`` (written every ``ckpt_every`` steps, at the end and on an interrupt).

The loop is :func:`analysis.fit.fit`; this module supplies the network (:mod:`analysis.registry`), the batches
(every batch is a function of the seed and the step, see :class:`analysis.tasks.PatchDataset`), the loss and the
validation. ``--resume`` continues the checkpoint to exactly the weights an uninterrupted run reaches, and refuses
a checkpoint of another run (config, data or seed). Under ``torchrun`` the global batch is split across the ranks
(DistributedDataParallel; gloo on CPU, nccl on CUDA), which reproduces the single-process loss curve up to
floating-point summation order.
"""

from __future__ import annotations

from symmetry import interrupt

interrupt.install(__name__)  # first, before the imports below (seconds): a Ctrl-C while they run ends quietly
# ruff: noqa: E402 - the imports follow the Ctrl-C handler on purpose

import argparse
import contextlib
import math
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from analysis.budget import check_train
from analysis.config import DEFAULT_STEPS, PRESETS, CliParser, TrainConfig, diff_configs
from analysis.evaluate import baseline_scores, score_examples
from analysis.fit import fit, loss_fn
from analysis.models import GroupAverage, count_parameters, init_sa_from_tl
from analysis.patches import ShardedPatches, items_fingerprint, lazy_items
from analysis.registry import network_from_config
from analysis.rundir import (  # noqa: F401 - re-exported: callers name the run files through analysis.train
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOG_FILE,
    RUN_FILES,
    check_resumable,
    check_state,
    data_fingerprint,
    load_config,
    load_weights,
    model_state,
    read_checkpoint,
    run_fingerprint,
)
from analysis.tasks import PatchDataset, eval_examples, load_items
from symmetry.datasets import load_dataset
from symmetry.errors import DataError, SymmetryError, UsageError
from symmetry.io import atomic_write_bytes, atomic_write_text, check_writable, read_json_file
from symmetry.runtime import DistInfo, cli_entry, resolve_device, set_threads, setup_distributed
from symmetry.runtime import broadcast_object as _broadcast


def build_from_config(cfg: TrainConfig) -> nn.Module:
    """The network a (resolved) config describes, freshly initialised from the global RNG.

    With ``cfg.average`` the network is wrapped in :class:`analysis.models.GroupAverage` (Lemma 4.1).
    """

    model = network_from_config(cfg)
    if cfg.average and not hasattr(model, "cost_factor"):
        model = GroupAverage(model, cfg.average)
    return model


def init_from_run(model: nn.Module, cfg: TrainConfig) -> list[str]:
    """Initialise ``model`` from ``cfg.init_from``: a run directory (or, as before, a checkpoint file).

    A run directory's ``config.json`` and ``checkpoint.pt`` are read with :mod:`analysis.rundir`'s safe loaders.
    ``sa`` starts from a ``tl`` run (the authors' recipe, :func:`analysis.models.init_sa_from_tl`: the
    hypernetwork keeps its zero last layer, so the start computes what the ``tl`` run computes); ``sa-global``
    from an ``equivariant`` run; every other kind from a run of its own kind. The group, basis, tail and
    group average must match (one-line :class:`UsageError` otherwise), and every weight must fit by name and
    shape (:class:`DataError`). Returns the keys left at their initialisation (the hypernetwork's).
    """

    source = Path(cfg.init_from)
    src = check_init_source(cfg)
    if src is None:
        load_weights(model, source)
        return []
    sd = model_state(read_checkpoint(source / CHECKPOINT_FILE))
    net = getattr(model, "model", model) if cfg.average else model
    if src.model != cfg.model:
        try:
            if cfg.model == "sa":
                return init_sa_from_tl(net, sd, kind=src.model, group=src.group, basis=src.model_option("basis"))
            return net.load_equivariant_state(sd)
        except UsageError as err:
            raise DataError(f"--init-from {source}: {err}") from None
    check_state(model, sd, str(source / CHECKPOINT_FILE))
    model.load_state_dict(sd)
    return []


def check_init_source(cfg: TrainConfig) -> TrainConfig | None:
    """The config of the ``--init-from`` run after checking it suits ``cfg`` (``None`` for a checkpoint file).

    Runs before the run directory is written, so a refused source leaves nothing behind.
    """

    source = Path(cfg.init_from)
    if source.is_file():
        return None
    if not source.is_dir():
        raise UsageError(f"--init-from {source} does not exist; name a run directory (config.json + checkpoint.pt)")
    src = load_config(source)
    for name, mine, theirs in (
        ("group", cfg.group, src.group),
        ("basis", cfg.model_option("basis"), src.model_option("basis")),
        ("tail", cfg.model_option("tail"), src.model_option("tail")),
        ("average", cfg.average, src.average),
        ("task", cfg.task, src.task),
        ("channels", cfg.channels, src.channels),
    ):
        if mine != theirs:
            raise UsageError(
                f"--init-from {source} is a run with {name} {theirs!r}, this run has {mine!r}; use the same {name}"
            )
    allowed = {"sa": ("tl", "sa"), "sa-global": ("equivariant", "sa-global")}.get(cfg.model, (cfg.model,))
    if src.model not in allowed:
        raise UsageError(
            f"--init-from {source} is a {src.model!r} run; a {cfg.model!r} model starts from a "
            f"{' or '.join(repr(k) for k in allowed)} run"
        )
    if not (source / CHECKPOINT_FILE).is_file():
        raise DataError(f"--init-from {source} holds no {CHECKPOINT_FILE}; train that run first")
    return src


# ---- run directory --------------------------------------------------------------------


def prepare_run_dir(cfg: TrainConfig, *, resume: bool, overwrite: bool) -> int | None:
    """Check ``cfg.out`` against what it holds; returns the stored run's planned steps when resuming a checkpoint.

    Nothing is written here: ``config.json`` is written (and an ``--overwrite``-n run set aside) by
    :func:`replacing_run` once the model, its initialisation and the validation data are ready.
    """
    run = Path(cfg.out)
    if run.exists() and not run.is_dir():
        raise UsageError(f"run directory {run} is a file")
    check_writable(run / CONFIG_FILE, "run directory")
    config_path, ckpt_path = run / CONFIG_FILE, run / CHECKPOINT_FILE
    holds_run = config_path.exists() or ckpt_path.exists()
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if resume:
        if not holds_run:
            raise UsageError(f"--resume: {run} holds no run (no {CONFIG_FILE} or {CHECKPOINT_FILE}); drop --resume")
        if not config_path.exists():
            raise UsageError(
                f"--resume: {run} holds a checkpoint but no {CONFIG_FILE}, so nothing shows which run it belongs "
                "to; use --overwrite to start anew"
            )
        stored = TrainConfig.from_json(config_path)
        planned = stored.steps
        diffs = diff_configs(stored.resolved().identity(), cfg.identity())
        if diffs:
            raise UsageError(
                f"--resume: {run} holds a different run; these settings differ: {'; '.join(diffs)} "
                "(only steps/epochs, device, data root and logging intervals may change)"
            )
    elif holds_run:
        if not overwrite:
            if config_path.exists():
                stored = TrainConfig.from_json(config_path)
                diffs = diff_configs(stored.to_dict(), cfg.to_dict(), ignore={"out"})
                what = (
                    f"a different run ({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''})"
                    if diffs
                    else ("a run with the same settings")
                )
            else:
                what = "a checkpoint of another run"
            raise UsageError(f"{run} already holds {what}; use --resume to continue it or --overwrite to replace it")
    if resume and ckpt_path.exists():
        return planned if planned is not None else cfg.steps
    return None


@contextlib.contextmanager
def replacing_run(cfg: TrainConfig, *, overwrite: bool, write: bool = True):
    """Write ``config.json`` and train inside the block; a run that fails before it saves a checkpoint changes nothing.

    The files of a run being replaced (``overwrite``) are moved into ``OUT/.replaced`` first and put back if the
    block fails (a damaged ``--init-from``, missing validation data, a full disk, out of memory) before the new run
    saved a checkpoint; a resumed run's ``config.json`` and ``log.csv`` are put back likewise, and the files a new
    run created are removed. ``write`` is False on the ranks other than 0 (they write nothing).
    """
    if not write:
        yield
        return
    run = Path(cfg.out)
    aside, ckpt = run / ".replaced", run / CHECKPOINT_FILE
    existed = {name for name in RUN_FILES if (run / name).exists()}
    moved: list[str] = []
    saved = {}
    if overwrite:
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir(parents=True, exist_ok=True)
        for name in sorted(existed):
            os.replace(run / name, aside / name)
            moved.append(name)
    else:  # a resumed run rewrites these two before its next checkpoint
        saved = {name: (run / name).read_bytes() for name in (CONFIG_FILE, LOG_FILE) if name in existed}
    before = _file_state(ckpt)
    try:
        atomic_write_text(run / CONFIG_FILE, cfg.to_json())
        yield
    except BaseException:
        if _file_state(ckpt) == before:  # nothing new was saved: leave the folder as it was
            for name in RUN_FILES:
                if name in moved:
                    os.replace(aside / name, run / name)
                elif name in saved:
                    atomic_write_bytes(run / name, saved[name])
                elif name not in existed:
                    (run / name).unlink(missing_ok=True)
        raise
    finally:
        if overwrite:
            shutil.rmtree(aside, ignore_errors=True)


def _file_state(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def check_resume(run: Path, model: nn.Module, planned: int, total: int, fingerprint: dict) -> None:
    """Refuse, before anything is written, a checkpoint that resume would load wrongly or one past ``--steps``."""
    path = run / CHECKPOINT_FILE
    state = read_checkpoint(path)
    check_resumable(state, path, model, planned, fingerprint)
    if state["step"] > total:
        raise UsageError(
            f"--resume: {path} is at step {state['step']}, past the {total} steps asked for; give --steps "
            f"{state['step']} or more (the run planned {planned})"
        )


def validate(model: nn.Module, examples, cfg: TrainConfig, device: torch.device) -> float:
    """Mean PSNR (dB) on validation examples (Y channel for RGB, border = scale)."""

    if not examples:
        return math.nan
    df = score_examples(model, examples, task=cfg.task, scale=cfg.scale, loss=cfg.loss, device=device, ssim=False)
    return float(df["psnr"].mean())


# ---- training -------------------------------------------------------------------------


def resolve_steps(cfg: TrainConfig, n_train: int) -> int:
    if cfg.steps is not None:
        return int(cfg.steps)
    if cfg.epochs is not None:
        return max(1, math.ceil(cfg.epochs * n_train / cfg.batch_size))
    return DEFAULT_STEPS


def _as_config(config: TrainConfig | dict) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    return TrainConfig.from_dict(dict(config))


def train(
    config: TrainConfig | dict,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    quiet: bool = True,
    stop_at: int | None = None,
) -> Path:
    """Train the run ``config`` describes into ``config.out``; returns the run directory.

    ``resume`` continues the checkpoint in the run directory; ``overwrite`` replaces a run
    there (otherwise a run directory holding a run is refused). ``stop_at`` stops after
    that many steps with a checkpoint, as an interruption would (for tests and budgets).
    Under ``torchrun`` (``WORLD_SIZE > 1``) every rank calls this; rank 0 writes the files.
    A non-finite loss stops the run with a :class:`DataError` and keeps the last checkpoint.
    """
    cfg = _as_config(config).resolved()
    device = resolve_device(cfg.device)
    info = setup_distributed(device)
    try:
        return _train(cfg, device, info, resume, overwrite, progress, quiet, stop_at)
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, device, info: DistInfo, resume, overwrite, progress, quiet, stop_at) -> Path:

    if info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if cfg.batch_size % info.world:
        raise UsageError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes ({info.world})")
    amp = bool(cfg.amp) and device.type == "cuda"
    if cfg.amp and not amp and info.main and not quiet:
        print("note: --amp needs CUDA; training in float32 on the CPU", file=sys.stderr)
    run = Path(cfg.out)

    items = lazy_items(  # decoded once to a disk cache, memory-mapped per patch: no rank holds the set
        cfg.task,
        cfg.data,
        split="train",
        data_root=cfg.data_root,
        channels=cfg.channels,
        scale=cfg.scale,
        max_images=cfg.max_images,
    )
    dataset = PatchDataset(
        items,
        cfg.task,
        patch_size=cfg.patch_size,
        scale=cfg.scale,
        sigma=cfg.sigma,
        augment=cfg.augment,
        seed=cfg.seed,
    )
    total = resolve_steps(cfg, len(dataset))
    cfg = cfg.replace(steps=total)

    # rank 0 checks the run directory (it writes it once the model and data are ready); the others follow its verdict
    verdict: Any = None
    if info.main:
        try:
            if cfg.init_from and not resume:
                check_init_source(cfg)
            verdict = prepare_run_dir(cfg, resume=resume, overwrite=overwrite)
        except SymmetryError as err:
            verdict = err
    verdict = _broadcast(verdict, info)
    if isinstance(verdict, SymmetryError):
        raise verdict
    resuming, planned = verdict is not None, verdict
    fingerprint = run_fingerprint(cfg.identity(), items_fingerprint(items), cfg.seed)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    model = build_from_config(cfg).to(device)
    if resuming:
        check_resume(run, model, planned, total, fingerprint)
    if cfg.init_from and not resuming:
        init_from_run(model, cfg)

    val_examples, input_psnr = [], math.nan
    if info.main and cfg.val_images > 0:
        val_items = load_items(
            cfg.task,
            cfg.test_data or cfg.data,
            split="valid",
            data_root=cfg.data_root,
            channels=cfg.channels,
            scale=cfg.scale,
            max_images=cfg.val_images,
        )
        val_examples = eval_examples(
            val_items, cfg.task, scale=cfg.scale, sigma=cfg.sigma, seed=cfg.seed, crop=cfg.val_crop
        )

        input_psnr = float(baseline_scores(val_examples, cfg.task, cfg.scale, ssim=False)["psnr"].mean())

    stream = ShardedPatches(dataset, cfg.batch_size)  # rank r reads only the images of its batch positions

    def batches(k: int):
        x, y = stream.batch_of_step(k, info.rank, info.world)
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def step(net: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return loss_fn(cfg.loss, net(x).float(), y)

    if info.main and not resuming and not quiet:
        print(
            f"training {cfg.model} ({count_parameters(model):,} parameters, group {cfg.group}) on {cfg.task} "
            f"({cfg.data}, {len(dataset)} images) for {total} steps into {run}"
            + (f" on {info.world} processes" if info.world > 1 else ""),
            file=sys.stderr,
        )
    with replacing_run(cfg, overwrite=overwrite and not resuming, write=info.main):
        result = fit(
            model,
            step,
            batches,
            steps=total,
            lr=cfg.lr,
            schedule=cfg.schedule,
            lr_step=cfg.lr_step,
            lr_gamma=cfg.lr_gamma,
            device=device,
            amp=amp,
            run_dir=run,
            resume=resuming,
            fingerprint=fingerprint,
            ckpt_every=cfg.ckpt_every,
            log_every=cfg.log_every,
            epoch_of=lambda done: done * cfg.batch_size / len(dataset),
            validate=(lambda m: validate(m, val_examples, cfg, device)) if val_examples else None,
            val_every=cfg.val_every,
            stop_at=stop_at,
            dist_info=info,
            progress=progress,
            quiet=quiet,
        )
    if result.resumed_from >= total:
        if info.main and not quiet:
            print(f"{run}: already trained {result.resumed_from} of {total} steps; nothing to do", file=sys.stderr)
        return run
    if info.main and not quiet:
        gain = ""
        vals = [float(r["val_psnr"]) for r in result.rows if r.get("val_psnr") not in ("", None)]
        if vals and not math.isnan(input_psnr) and int(result.rows[-1]["step"]) == result.step and vals:
            val_psnr = vals[-1]
            gain = f"; validation PSNR {val_psnr:.2f} dB (input {input_psnr:.2f} dB, {val_psnr - input_psnr:+.2f} dB)"
        per_step = result.train_seconds / max(1, result.step)
        print(
            f"trained {result.step}/{total} steps in {result.train_seconds:.1f} s ({per_step:.3f} s/step){gain}",
            file=sys.stderr,
        )
    if info.world > 1:
        dist.barrier()
    return run


# ---- command line ---------------------------------------------------------------------

_FLAGS = {
    "task": dict(help="denoise, sr or derain"),
    "model": dict(help="plain, equivariant, tl, sa, sa-global or e2cnn"),
    "group": dict(help="group of the equivariant models (rotN, dihN, flip, flipud); plain matches its size"),
    "data": dict(help="training data: skimage (embedded), folder:PATH, div2k, rain100l, synthetic:..."),
    "data_root": dict(help="where div2k / rain100l live (default $SYMMETRY_DATA or ~/.cache/symmetry)"),
    "test_data": dict(help="validation/test data when not the held-out part of --data (e.g. folder:Set5)"),
    "channels": dict(help="rgb or gray"),
    "max_images": dict(type=int, help="use only the first N training images"),
    "scale": dict(type=int, help="SR scale: 2, 3 or 4 (sr only)"),
    "sigma": dict(type=float, help="noise standard deviation in 0-255 units (denoise)"),
    "width": dict(type=int, help="feature width (fields per group element for equivariant models)"),
    "depth": dict(type=int, help="residual blocks"),
    "kernel_size": dict(type=int, help="convolution kernel size (odd)"),
    "patch_size": dict(type=int, help="training patch side (of the target / HR image)"),
    "batch_size": dict(type=int, help="global batch size (split across processes)"),
    "steps": dict(type=int, help=f"optimisation steps (default {DEFAULT_STEPS})"),
    "epochs": dict(type=float, help="train for this many passes over the training images instead of --steps"),
    "lr": dict(type=float, help="Adam learning rate"),
    "schedule": dict(help="step, cosine or constant"),
    "lr_step": dict(type=int, help="step schedule: decay every N steps (default half the run)"),
    "lr_gamma": dict(type=float, help="step schedule: decay factor"),
    "loss": dict(help="l1 or l2"),
    "augment": dict(metavar="GROUP", help="augment by a grid-exact group: flip, flipud, rot2, rot4, dih4, ..."),
    "seed": dict(type=int, help="seed of initialisation, patches and noise"),
    "device": dict(help="auto, cpu, cuda or cuda:N"),
    "init_from": dict(
        metavar="RUN",
        help="start from a run's weights (sa from a tl run, sa-global from an equivariant run, else the same kind)",
    ),
    "average": dict(metavar="GROUP", help="train the group average over GROUP (flip, rot4, dih4, ...; |G| x cost)"),
    "log_every": dict(type=int, help="log.csv row every N steps"),
    "val_every": dict(type=int, help="validate every N steps"),
    "val_images": dict(type=int, help="validation images (0: none)"),
    "val_crop": dict(type=int, help="centre crop of validation images (0: full images)"),
    "ckpt_every": dict(type=int, help="checkpoint every N steps"),
}


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = CliParser(
        prog="python -m analysis.train",
        description="Train a restoration network (denoise / sr / derain) into a run directory.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--out", help=f"run directory (default {defaults.out})")
    p.add_argument("--config", metavar="FILE.json", help="options from a JSON file (command-line options win)")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="named settings replacing the defaults (--config and explicit options win). cpu: "
        + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in PRESETS["cpu"].items())
        + " (minutes on 2 cores)",
    )
    p.add_argument("--threads", type=int, help="CPU threads of this process (default: $OMP_NUM_THREADS, else 1)")
    for name, spec in _FLAGS.items():
        kw = dict(spec)
        default = getattr(defaults, name)
        text = kw.pop("help") + (f" [default: {default}]" if default is not None else "")
        p.add_argument("--" + name.replace("_", "-"), help=text, **kw)
    p.add_argument("--basis", help="filter basis of equivariant/tl/sa: fourier or bicubic [default: fourier]")
    p.add_argument("--tail", help="upsampler and last conv: equivariant or plain [default: equivariant]")
    p.add_argument("--match", help="plain baseline width: parameters or channels [default: parameters]")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only; ignored on CPU)")
    p.add_argument("--download", action="store_true", help="with --data div2k: fetch the archives first if missing")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="refuse to start when the run's estimated memory exceeds SIZE, e.g. 16G (default: what the machine has "
        "available: MemAvailable, a cgroup limit or ulimit -v, whichever is least; on CUDA the GPU's free memory)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="no messages")
    return p


def _read_json_options(path: str | Path) -> dict[str, Any]:
    """The options a JSON config file sets (validated, but without filling in defaults)."""
    path = Path(path)
    raw = read_json_file(path, "config file")
    TrainConfig.from_dict(raw, str(path))  # unknown keys -> UsageError
    return {k.replace("-", "_"): v for k, v in raw.items()}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the run's stored config (with --resume), then --config FILE, then explicit options."""
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.fields()}
    if "steps" in given and "epochs" in given:
        raise UsageError("give --steps or --epochs, not both")
    if given.get("val_crop") == 0:
        given["val_crop"] = None
    from_file = _read_json_options(args.config) if getattr(args, "config", None) else {}
    out = given.get("out", from_file.get("out", TrainConfig().out))
    options = TrainConfig().to_dict()
    stored = Path(out) / CONFIG_FILE
    preset = dict(PRESETS[args.preset]) if getattr(args, "preset", None) else {}
    if getattr(args, "resume", False) and stored.exists():
        options.update(TrainConfig.from_json(stored).to_dict())
        preset = {}  # the stored run already holds its settings
    for layer in (preset, from_file, given):
        if "steps" in layer and "epochs" not in layer:
            options["epochs"] = None
        if "epochs" in layer and "steps" not in layer:
            options["steps"] = None
        options.update(layer)
    options["out"] = out
    flags = {k: v for k, v in vars(args).items() if k in ("basis", "tail", "match")}
    if flags:
        options["model_options"] = {**dict(options.get("model_options") or {}), **flags}
    return TrainConfig.from_dict(options)


def download_data(cfg: TrainConfig) -> None:
    """``--download``: fetch DIV2K's training and validation archives into the data root (no-op when present)."""

    wanted = [spec for spec in (cfg.data, cfg.test_data) if spec == "div2k"]
    if not wanted:
        raise UsageError(f"--download applies to --data div2k (the only dataset fetched), not {cfg.data!r}")
    for split in ("train", "valid"):
        load_dataset("div2k", data_root=cfg.data_root, split=split, download=True)


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    set_threads(getattr(args, "threads", None))
    cfg = config_from_args(args)
    resume = getattr(args, "resume", False)
    check_train(cfg.resolved(), resume=resume, max_memory=getattr(args, "max_memory", None))  # before any work
    if getattr(args, "download", False):
        download_data(cfg)
    train(
        cfg,
        resume=resume,
        overwrite=getattr(args, "overwrite", False),
        progress=not getattr(args, "no_progress", False) and sys.stderr.isatty(),
        quiet=getattr(args, "quiet", False),
    )
    return 0


if __name__ == "__main__":
    sys.exit(interrupt.run(main))
