"""The one training loop: :func:`fit` (used by ``python -m analysis.train`` and every experiment that trains).

What varies between trainings is the *step function* the caller passes, as BasicSR's ``optimize_parameters``::

    def step(net, batch) -> torch.Tensor:      # the scalar loss of one batch; fit does backward and the update
        x, y = batch
        return F.l1_loss(net(x), y)

    result = fit(model, step, batches=lambda k: dataset.batch_of_step(k), steps=1000, lr=1e-3)

``batches(k)`` returns the batch of step ``k`` (0-based) and must be a function of ``k`` alone (draw it from
``symmetry.streams.rng(seed, "batches", k)``): that is what makes a resumed run reach exactly the weights of an
uninterrupted one. Everything else is fit's: Adam and the learning-rate schedule (:func:`lr_factor`), AMP on
CUDA, data-parallel training under ``torchrun`` (``dist``), the NaN stop, ``log.csv`` rows, validation,
checkpoints in a run directory (:mod:`analysis.rundir`), exact resume, the progress bar, and a per-step callback.

Checkpoints hold one step boundary: the counter, model, optimiser, scheduler, scaler and RNG states saved together.
SIGINT and SIGTERM are deferred to the end of the step in progress (a second signal interrupts at once); an
interrupt raised inside a step (a hook, a second Ctrl-C) is resolved to a boundary: before the optimiser's update
the step is dropped (RNG state rewound), after it the step's bookkeeping is completed. Either way the checkpoint
written on the way out is one a resumed run continues bit-identically.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis import rundir
from symmetry.errors import DataError, UsageError
from symmetry.runtime import DistInfo
from symmetry.runtime import progress as progress_bar

StepFn = Callable[[nn.Module, Any], torch.Tensor]
"""``step(net, batch) -> loss``: the scalar loss of one batch (``net`` is the model, or its DDP wrapper)."""
SCHEDULES = ("step", "cosine", "constant")


@dataclass
class StepInfo:
    """What the per-step ``callback`` sees after step ``step`` (1-based count of completed steps)."""

    step: int
    total: int
    loss: float
    lr: float
    seconds: float
    model: nn.Module


@dataclass
class FitResult:
    """Outcome of :func:`fit`: steps completed, per-step losses of this call, training seconds, log rows."""

    step: int
    losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)
    resumed_from: int = 0


def lr_factor(schedule: str, total: int, step: int, lr_step: int | None = None, lr_gamma: float = 0.5) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of a ``total``-step run.

    ``cosine``: ``(1 + cos(pi step / total)) / 2`` (to zero); ``step``: ``lr_gamma ** (step // lr_step)``
    (``lr_step`` defaults to half the run); ``constant``: 1.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        every = lr_step or max(1, total // 2)
        return lr_gamma ** (step // every)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    raise UsageError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def loss_fn(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss ``l1`` (mean absolute error) or ``l2`` (mean squared error)."""
    if name == "l1":
        return torch.nn.functional.l1_loss(output, target)
    if name == "l2":
        return torch.nn.functional.mse_loss(output, target)
    raise UsageError(f"unknown loss {name!r}; choose l1 or l2")


# ---- RNG state ------------------------------------------------------------------------


def _raw_rng() -> tuple:
    """The global RNG states as the libraries return them (cheap: taken at every step start)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), np.random.get_state(), random.getstate(), cuda


def rng_state(raw: tuple | None = None) -> dict:
    """The global torch, NumPy, Python (and CUDA) RNG states (now, or of ``raw``) in a ``weights_only`` form."""
    torch_state, np_state, py_state, cuda = raw or _raw_rng()
    state = {
        "torch": torch_state,
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if cuda is not None:
        state["cuda"] = cuda
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np_state = list(state["numpy"])
    np_state[1] = np.asarray(np_state[1].numpy() if torch.is_tensor(np_state[1]) else np_state[1], dtype=np.uint32)
    np.random.set_state(tuple(np_state))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ---- interrupts -----------------------------------------------------------------------


class _Deferred:
    """SIGINT/SIGTERM handlers that record the signal; the loop acts on it at the next step boundary."""

    def __init__(self) -> None:
        self.pending: int | None = None

    def _handle(self, signum, frame) -> None:
        if self.pending is not None:  # a second signal: interrupt now (the loop resolves it to a boundary)
            raise KeyboardInterrupt
        self.pending = signum

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


# ---- the loop -------------------------------------------------------------------------


def fit(
    model: nn.Module,
    step: StepFn,
    batches: Callable[[int], Any],
    *,
    steps: int,
    lr: float = 1e-3,
    schedule: str = "cosine",
    lr_step: int | None = None,
    lr_gamma: float = 0.5,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
    device: torch.device | None = None,
    amp: bool = False,
    run_dir: str | Path | None = None,
    resume: bool = False,
    fingerprint: dict[str, Any] | None = None,
    ckpt_every: int = 100,
    log_every: int = 0,
    epoch_of: Callable[[int], float] | None = None,
    validate: Callable[[nn.Module], float] | None = None,
    val_every: int = 0,
    callback: Callable[[StepInfo], bool | None] | None = None,
    stop_at: int | None = None,
    dist_info=None,
    progress: bool = False,
    quiet: bool = True,
    label: str = "train",
    deterministic: bool = False,
) -> FitResult:
    """Train ``model`` in place for ``steps`` optimisation steps of ``step(net, batches(k))`` (see the module doc).

    Optimiser: ``optimizer(params)`` (default Adam at ``lr``), learning rate ``lr * lr_factor(schedule, ...)``.
    ``run_dir``: where ``checkpoint.pt`` (every ``ckpt_every`` steps, at the end, at a stop or an interrupt) and
    ``log.csv`` (a row every ``log_every`` steps, at each validation and at the end) go; ``None`` keeps nothing
    on disk. ``resume`` continues the run's checkpoint, which must carry ``fingerprint``
    (:func:`analysis.rundir.run_fingerprint`), else a one-line :class:`UsageError`. ``validate(model) -> PSNR``
    runs every ``val_every`` steps and at the end (``val_psnr`` column); ``epoch_of(k)`` fills ``epoch``.
    ``callback(info)`` runs after every step; returning True stops (as ``stop_at`` does) with a checkpoint. A
    non-finite loss stops with a :class:`DataError`, keeping the last checkpoint. ``deterministic`` asks torch
    for deterministic kernels for the duration. ``dist_info`` (:class:`symmetry.runtime.DistInfo`): under
    ``torchrun`` the model is wrapped in DistributedDataParallel, ``batches(k)`` must return this rank's share,
    and rank 0 writes the files.
    """
    info = dist_info or DistInfo()
    if not isinstance(steps, int) or steps < 1:
        raise UsageError(f"steps must be a positive integer, got {steps!r}")
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    amp = bool(amp) and device.type == "cuda"
    run = Path(run_dir) if run_dir is not None else None
    ckpt_path = run / rundir.CHECKPOINT_FILE if run is not None else None
    log_path = run / rundir.LOG_FILE if run is not None else None
    fingerprint = fingerprint or {}

    opt = optimizer(model.parameters()) if optimizer else torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(schedule, steps, s, lr_step, lr_gamma))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    start, seconds, rows = 0, 0.0, []
    running = {"sum": 0.0, "count": 0}
    last_saved: int | None = None
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = rundir.read_checkpoint(ckpt_path, map_location=device)
        rundir.check_checkpoint(state, ckpt_path, fingerprint)
        rundir.check_state(model, state["model"], str(ckpt_path))
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if amp and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            detail = f"{type(err).__name__}: {str(err)[:200]}"
            raise DataError(f"checkpoint {ckpt_path} is damaged ({detail}); use --overwrite") from None
        start, seconds = int(state["step"]), float(state["train_seconds"])
        running = {"sum": float(state["running"].get("sum", 0.0)), "count": int(state["running"].get("count", 0))}
        rows = rundir.read_log_rows(log_path, start) if info.main else []
        last_saved = start
    result = FitResult(step=start, train_seconds=seconds, rows=rows, resumed_from=start)
    if start >= steps:
        return result

    net: nn.Module = model
    if info.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def save(done: int, rng: dict | None = None) -> None:
        nonlocal last_saved
        if ckpt_path is None or not info.main or last_saved == done:
            return
        rundir.save_checkpoint(
            ckpt_path,
            {
                "step": done,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if amp else {},
                "rng": rng or rng_state(),
                "train_seconds": seconds,
                "running": dict(running),
                "fingerprint": fingerprint,
            },
        )
        last_saved = done

    updated = {"flag": False}
    hook = opt.register_step_post_hook(lambda *_: updated.__setitem__("flag", True))
    flags = {}
    if deterministic:
        flags = {"algos": torch.are_deterministic_algorithms_enabled(), "bench": torch.backends.cudnn.benchmark}
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    deferred = _Deferred()
    fields = {"loss": "-", "val": "-"}
    try:
        with (
            deferred.installed(),
            progress_bar(
                steps,
                label,
                enabled=progress and info.main,
                quiet=quiet or not info.main,
                completed=start,
                fields=fields,
            ) as bar,
        ):
            for k in range(start, steps):
                t0 = time.perf_counter()
                rng_at_start = _raw_rng()
                updated["flag"] = False
                stage = "update"
                try:
                    batch = batches(k)
                    net.train()
                    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        loss = step(net, batch)
                    value = loss.detach().float().clone()
                    if info.world > 1:
                        torch.distributed.all_reduce(value)
                        value /= info.world
                    value = float(value)
                    if not math.isfinite(value):
                        where = (
                            f"the last good checkpoint {ckpt_path} (step {last_saved}) is kept"
                            if last_saved is not None
                            else "no checkpoint had been written yet"
                        )
                        if log_path is not None and info.main and rows:
                            rundir.write_log(log_path, rows)
                        raise DataError(
                            f"training loss became {value} at step {k + 1}; stopped, {where}. "
                            "Try a lower --lr, --loss l1 or no --amp"
                        )
                    lr_now = opt.param_groups[0]["lr"]
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    stage = "scaler"
                    scaler.update()
                    stage = "scheduler"
                    sched.step()
                    stage = "done"
                except KeyboardInterrupt:
                    if not updated["flag"] and stage == "update":
                        save(k, rng_state(rng_at_start))  # the update never happened: the boundary before this step
                        raise
                    if stage in ("update", "scaler"):  # the update is in the weights: finish the step, then stop
                        scaler.update()
                    sched.step()
                    deferred.pending = signal.SIGINT
                done = k + 1
                seconds += time.perf_counter() - t0
                running["sum"] += value
                running["count"] += 1
                result.losses.append(value)
                last = done == steps
                do_val = validate is not None and ((val_every and done % val_every == 0) or last)
                if (log_every and done % log_every == 0) or do_val or last:
                    val = validate(model) if do_val else math.nan
                    row = {
                        "step": done,
                        "epoch": f"{epoch_of(done):.4g}" if epoch_of else "",
                        "loss": f"{running['sum'] / max(1, running['count']):.6g}",
                        "lr": f"{lr_now:.6g}",
                        "val_psnr": "" if math.isnan(val) else f"{val:.4f}",
                        "time_s": f"{seconds:.3f}",
                    }
                    if info.main:
                        rows.append(row)
                        if log_path is not None:
                            rundir.write_log(log_path, rows)
                    fields["loss"] = f"{running['sum'] / max(1, running['count']):.4g}"
                    if not math.isnan(val):
                        fields["val"] = f"{val:.2f} dB"
                    bar.update(done, **fields)
                    running = {"sum": 0.0, "count": 0}
                else:
                    bar.update(done)
                stopping = stop_at is not None and done >= stop_at
                if callback is not None:
                    stopping = bool(callback(StepInfo(done, steps, value, lr_now, seconds, model))) or stopping
                result.step, result.train_seconds = done, seconds
                if done % ckpt_every == 0 or last or stopping or deferred.pending is not None:
                    save(done)
                if deferred.pending is not None:
                    raise KeyboardInterrupt
                if stopping:
                    break
    finally:
        hook.remove()
        if deterministic:
            torch.use_deterministic_algorithms(flags["algos"])
            torch.backends.cudnn.benchmark = flags["bench"]
    result.rows = rows
    return result


__all__ = ["FitResult", "StepFn", "StepInfo", "fit", "loss_fn", "lr_factor", "rng_state", "set_rng_state"]
