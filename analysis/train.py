"""Train a restoration network: ``python -m analysis.train`` or :func:`train` from Python.

A run lives in one directory (``--out``):

- ``config.json``: the resolved :class:`analysis.config.TrainConfig`;
- ``log.csv``: ``step, epoch, loss, lr, val_psnr, time_s`` (mean training loss since the
  previous row, learning rate of the step, validation PSNR in dB where validated,
  cumulative training seconds);
- ``checkpoint.pt``: model, optimiser, scheduler, AMP scaler, step, RNG states and the
  running log sums, written atomically every ``ckpt_every`` steps and at the end.

``--resume`` continues from the checkpoint to exactly the weights an uninterrupted run
reaches (every batch is a function of the seed and the step, see
:class:`analysis.tasks.PatchDataset`). Under ``torchrun`` the global batch is split across
the ranks (DistributedDataParallel; gloo on CPU, nccl on CUDA), which reproduces the
single-process loss curve up to floating-point summation order.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from analysis.config import DEFAULT_STEPS, CliParser, TrainConfig, diff_configs
from symmetry.errors import DataError, SymmetryError, UsageError
from symmetry.io import atomic_path, atomic_write_text, check_writable
from symmetry.runtime import DistInfo, cli_entry, resolve_device, setup_distributed
from symmetry.runtime import broadcast_object as _broadcast

CONFIG_FILE = "config.json"
LOG_FILE = "log.csv"
CHECKPOINT_FILE = "checkpoint.pt"
RUN_FILES = (CONFIG_FILE, LOG_FILE, CHECKPOINT_FILE, "metrics.json", "transforms.csv", "test_images.csv")
"""Files a run directory may hold; ``--overwrite`` removes exactly these."""
LOG_COLUMNS = ["step", "epoch", "loss", "lr", "val_psnr", "time_s"]
CHECKPOINT_FORMAT = "analysis.train/1"


# ---- models and checkpoints -----------------------------------------------------------


def in_channels(cfg: TrainConfig) -> int:
    return 3 if cfg.channels == "rgb" else 1


def build_from_config(cfg: TrainConfig) -> nn.Module:
    """The network a (resolved) config describes, freshly initialised from the global RNG."""
    from analysis.models import build_model

    return build_model(
        cfg.model,
        group=cfg.group,
        scale=cfg.scale or 1,
        in_channels=in_channels(cfg),
        width=cfg.width,
        depth=cfg.depth,
        kernel_size=cfg.kernel_size,
    )


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint file; a missing or unreadable file is a :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
        detail = next((line.strip() for line in text if "Unsupported global" in line), text[0] if text else "")
        raise DataError(
            f"cannot read checkpoint {path} (not a file written by analysis.train or torch.save of a state dict): "
            f"{type(err).__name__}: {detail[:200]}"
        ) from None
    if not isinstance(state, dict):
        raise DataError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def model_state(state: dict) -> dict[str, torch.Tensor]:
    """The model weights of a training checkpoint, or the state dict itself."""
    sd = state.get("model", state) if state.get("format") == CHECKPOINT_FORMAT else state
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DataError("the checkpoint holds no model state dict")
    return sd


def _short(keys: list[str], limit: int = 6) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`DataError` naming the keys where ``state`` does not fit ``model``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch (checkpoint vs model): {_short(shapes, 3)}")
        raise DataError(
            f"checkpoint {source} is for a different architecture than {type(model).__name__}: " + "; ".join(parts)
        )


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Initialise ``model`` from a checkpoint or state-dict file (``--init-from``).

    A sample-adaptive model accepts an ``equivariant`` checkpoint (its hypernetwork keeps
    its identity initialisation).
    """
    sd = model_state(read_checkpoint(path))
    if hasattr(model, "load_equivariant_state") and not any(k.startswith("hyper.") for k in sd):
        try:
            model.load_equivariant_state(sd)
        except UsageError as err:
            raise DataError(f"checkpoint {path}: {err}") from None
        return
    check_state(model, sd, str(path))
    model.load_state_dict(sd)


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [v.tolist() if isinstance(v, np.ndarray) else v for v in np.random.get_state()],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np_state = list(state["numpy"])
    np_state[1] = np.asarray(np_state[1], dtype=np.uint32)
    np.random.set_state(tuple(np_state))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ---- schedule, loss -------------------------------------------------------------------


def lr_factor(cfg: TrainConfig, total: int, step: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of a ``total``-step run."""
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        every = cfg.lr_step or max(1, total // 2)
        return cfg.lr_gamma ** (step // every)
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))  # cosine to zero


def loss_fn(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if name == "l1":
        return F.l1_loss(output, target)
    return F.mse_loss(output, target)


# ---- distributed ----------------------------------------------------------------------
# DistInfo, setup_distributed and _broadcast live in symmetry.runtime (shared with symmetry.measure).


# ---- run directory --------------------------------------------------------------------


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("step") and int(r["step"]) <= upto]
    return rows


def _write_log(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in LOG_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def prepare_run_dir(cfg: TrainConfig, *, resume: bool, overwrite: bool) -> bool:
    """Check ``cfg.out`` against what it holds, write ``config.json``; returns True when resuming a checkpoint."""
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
        if config_path.exists():
            stored = TrainConfig.from_json(config_path)
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
        for name in RUN_FILES:
            (run / name).unlink(missing_ok=True)
    atomic_write_text(config_path, cfg.to_json())
    return resume and ckpt_path.exists()


# ---- evaluation during training -------------------------------------------------------


def validate(model: nn.Module, examples, cfg: TrainConfig, device: torch.device) -> float:
    """Mean PSNR (dB) on validation examples (Y channel for RGB, border = scale)."""
    from analysis.evaluate import score_examples

    if not examples:
        return math.nan
    df = score_examples(model, examples, task=cfg.task, scale=cfg.scale, loss=cfg.loss, device=device, ssim=False)
    return float(df["psnr"].mean())


# ---- progress -------------------------------------------------------------------------


class _Progress:
    """rich progress bar on stderr (rank 0, when asked), plus plain messages."""

    def __init__(self, enabled: bool, quiet: bool, total: int, start: int) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, soft_wrap=True)
        self.quiet = quiet
        self.bar = None
        if enabled and not quiet:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, loss="-", val="-")
            self.bar.start()

    def update(self, step: int, loss: float | None = None, val: float | None = None) -> None:
        if self.bar is None:
            if val is not None and not math.isnan(val) and loss is not None:
                self.print(f"step {step}: loss {loss:.4g}, validation PSNR {val:.2f} dB")
            return
        fields = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4g}"
        if val is not None and not math.isnan(val):
            fields["val"] = f"{val:.2f} dB"
        self.bar.update(self.task, completed=step, **fields)

    def print(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, markup=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


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
    from analysis.models import count_parameters
    from analysis.tasks import PatchDataset, eval_examples, load_items

    if info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if cfg.batch_size % info.world:
        raise UsageError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes ({info.world})")
    amp = bool(cfg.amp) and device.type == "cuda"
    if cfg.amp and not amp and info.main and not quiet:
        print("note: --amp needs CUDA; training in float32 on the CPU", file=sys.stderr)
    run = Path(cfg.out)

    items = load_items(
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

    # rank 0 checks and writes the run directory; the others follow its verdict
    verdict: Any = None
    if info.main:
        try:
            verdict = prepare_run_dir(cfg, resume=resume, overwrite=overwrite)
        except SymmetryError as err:
            verdict = err
    verdict = _broadcast(verdict, info)
    if isinstance(verdict, SymmetryError):
        raise verdict
    resuming = bool(verdict)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    model = build_from_config(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, total, s))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    start, train_seconds, rows = 0, 0.0, []
    running = {"sum": 0.0, "count": 0}
    ckpt_path = run / CHECKPOINT_FILE
    last_saved = None
    if resuming:
        state = read_checkpoint(ckpt_path, map_location=device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise DataError(f"{ckpt_path} is not a training checkpoint of analysis.train")
        check_state(model, state["model"], str(ckpt_path))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, train_seconds = int(state["step"]), float(state["train_seconds"])
        running = dict(state.get("running", running))
        _set_rng_state(state["rng"])
        rows = _read_log(run / LOG_FILE, start) if info.main else []
        last_saved = start
        if start >= total:
            if info.main and not quiet:
                print(f"{run}: already trained {start} of {total} steps; nothing to do", file=sys.stderr)
            return run
    elif cfg.init_from:
        load_weights(model, cfg.init_from)

    net: nn.Module = model
    if info.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

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
        from analysis.evaluate import baseline_scores

        input_psnr = float(baseline_scores(val_examples, cfg.task, cfg.scale, ssim=False)["psnr"].mean())

    def save(step: int) -> None:
        nonlocal last_saved
        if not info.main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": cfg.to_dict(),
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if amp else {},
            "rng": _rng_state(),
            "train_seconds": train_seconds,
            "running": dict(running),
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)
        last_saved = step

    bar = _Progress(progress and info.main, quiet or not info.main, total, start)
    if info.main and start == 0:
        bar.print(
            f"training {cfg.model} ({count_parameters(model):,} parameters, group {cfg.group}) on {cfg.task} "
            f"({cfg.data}, {len(dataset)} images) for {total} steps into {run}"
            + (f" on {info.world} processes" if info.world > 1 else "")
        )
    per_rank = cfg.batch_size // info.world
    completed = start
    val_psnr = math.nan
    try:
        for step in range(start, total):
            t0 = time.perf_counter()
            first = step * cfg.batch_size + info.rank * per_rank
            x, y = dataset.batch(range(first, first + per_rank))
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            net.train()
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                out = net(x)
            loss = loss_fn(cfg.loss, out.float(), y)
            value = loss.detach().clone()
            if info.world > 1:
                dist.all_reduce(value)
                value /= info.world
            value = float(value)
            if not math.isfinite(value):
                where = (
                    f"the last good checkpoint {ckpt_path} (step {last_saved}) is kept"
                    if last_saved is not None
                    else "no checkpoint had been written yet"
                )
                if info.main and rows:
                    _write_log(run / LOG_FILE, rows)
                raise DataError(
                    f"training loss became {value} at step {step + 1}; stopped, {where}. "
                    "Try a lower --lr, --loss l1 or no --amp"
                )
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            completed = step + 1
            train_seconds += time.perf_counter() - t0
            running["sum"] += value
            running["count"] += 1
            done = step + 1
            last = done == total
            stopping = stop_at is not None and done >= stop_at
            do_val = bool(val_examples) and (done % cfg.val_every == 0 or last)
            if done % cfg.log_every == 0 or do_val or last:
                val_psnr = validate(model, val_examples, cfg, device) if do_val else math.nan
                if info.main:
                    rows.append(
                        {
                            "step": done,
                            "epoch": f"{done * cfg.batch_size / len(dataset):.4g}",
                            "loss": f"{running['sum'] / max(1, running['count']):.6g}",
                            "lr": f"{lr:.6g}",
                            "val_psnr": "" if math.isnan(val_psnr) else f"{val_psnr:.4f}",
                            "time_s": f"{train_seconds:.3f}",
                        }
                    )
                    _write_log(run / LOG_FILE, rows)
                    bar.update(done, running["sum"] / max(1, running["count"]), val_psnr)
                running = {"sum": 0.0, "count": 0}
            else:
                bar.update(done)
            if done % cfg.ckpt_every == 0 or last or stopping:
                save(done)
            if stopping:
                break
    except KeyboardInterrupt:
        if last_saved != completed:
            save(completed)
        bar.close()
        raise
    bar.close()
    if info.main:
        gain = ""
        if not math.isnan(val_psnr) and not math.isnan(input_psnr):
            gain = f"; validation PSNR {val_psnr:.2f} dB (input {input_psnr:.2f} dB, {val_psnr - input_psnr:+.2f} dB)"
        per_step = train_seconds / max(1, completed)
        bar.print(f"trained {completed}/{total} steps in {train_seconds:.1f} s ({per_step:.3f} s/step){gain}")
    if info.world > 1:
        dist.barrier()
    return run


# ---- command line ---------------------------------------------------------------------

_FLAGS = {
    "task": dict(help="denoise, sr or derain"),
    "model": dict(help="plain, equivariant, sa or e2cnn"),
    "group": dict(help="rotation group of the equivariant models (rotN); plain matches its parameter count"),
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
    "init_from": dict(metavar="CKPT", help="initialise the weights from a checkpoint (sa accepts equivariant)"),
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
    for name, spec in _FLAGS.items():
        kw = dict(spec)
        default = getattr(defaults, name)
        text = kw.pop("help") + (f" [default: {default}]" if default is not None else "")
        p.add_argument("--" + name.replace("_", "-"), help=text, **kw)
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only; ignored on CPU)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="no messages")
    return p


def _read_json_options(path: str | Path) -> dict[str, Any]:
    """The options a JSON config file sets (validated, but without filling in defaults)."""
    import json

    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read config file {path}: {err}") from None
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
    if getattr(args, "resume", False) and stored.exists():
        options.update(TrainConfig.from_json(stored).to_dict())
    for layer in (from_file, given):
        if "steps" in layer and "epochs" not in layer:
            options["epochs"] = None
        if "epochs" in layer and "steps" not in layer:
            options["steps"] = None
        options.update(layer)
    options["out"] = out
    return TrainConfig.from_dict(options)


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    train(
        cfg,
        resume=getattr(args, "resume", False),
        overwrite=getattr(args, "overwrite", False),
        progress=not getattr(args, "no_progress", False) and sys.stderr.isatty(),
        quiet=getattr(args, "quiet", False),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
