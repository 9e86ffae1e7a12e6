"""The run directory of a training run: its file names, checkpoints and :func:`load_run`.

A run directory holds

- ``config.json``: the resolved :class:`analysis.config.TrainConfig`;
- ``log.csv``: one row every ``log_every`` steps (:data:`LOG_COLUMNS`);
- ``checkpoint.pt``: what :func:`save_checkpoint` writes (schema :data:`CHECKPOINT_FORMAT`): the step counter,
  model, optimiser, scheduler, AMP scaler and RNG states of one step boundary, the running log sums, and the run's
  fingerprint (config identity, data fingerprint, seed) that resume must match;
- ``metrics.json``, ``test_images.csv``, ``transforms.csv``: written by :mod:`analysis.evaluate`.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only (nothing in them can execute), and checked
(schema, version, fingerprint) before any of their tensors is used.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.config import TrainConfig
from analysis.registry import network_from_config
from symmetry.errors import DataError, UsageError
from symmetry.io import atomic_write_bytes, atomic_write_text, read_json_file

CONFIG_FILE = "config.json"
LOG_FILE = "log.csv"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
TRANSFORMS_FILE = "transforms.csv"
IMAGES_FILE = "test_images.csv"
RUN_FILES = (CONFIG_FILE, LOG_FILE, CHECKPOINT_FILE, METRICS_FILE, TRANSFORMS_FILE, IMAGES_FILE)
"""Files a run directory may hold; ``--overwrite`` removes exactly these."""
LOG_COLUMNS = ["step", "epoch", "loss", "lr", "val_psnr", "time_s"]
CHECKPOINT_FORMAT = "analysis.fit/2"
"""Schema of a training checkpoint; resume accepts this one only."""
WEIGHT_FORMATS = (CHECKPOINT_FORMAT, "analysis.train/1")
"""Schemas whose ``model`` entry :func:`model_state` reads (older runs still evaluate)."""
CHECKPOINT_KEYS = ("step", "model", "optimizer", "scheduler", "rng", "train_seconds", "running", "fingerprint")


# ---- fingerprints ----------------------------------------------------------------------


def data_fingerprint(tensors, names=()) -> str:
    """A 16-hex-digit content hash of the training data: names, shapes, dtypes and every value."""
    h = hashlib.blake2b(digest_size=8)
    for name in names:
        h.update(str(name).encode() + b"\0")
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def run_fingerprint(identity: dict[str, Any], data: str, seed: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the config identity (as JSON text), data hash and seed."""
    return {"config": json.dumps(identity, sort_keys=True, default=str), "data": str(data), "seed": int(seed)}


def fingerprint_diff(stored: Any, current: dict[str, Any]) -> list[str]:
    """Human-readable differences between a checkpoint's fingerprint and the current run's ([] when equal)."""
    if not isinstance(stored, dict) or set(stored) != set(current):
        return ["the checkpoint carries no run fingerprint"]
    out = []
    if stored["seed"] != current["seed"]:
        out.append(f"seed: {stored['seed']!r} -> {current['seed']!r}")
    if stored["data"] != current["data"]:
        out.append("training data differ (content hash)")
    if stored["config"] != current["config"]:
        try:
            a, b = json.loads(stored["config"]), json.loads(current["config"])
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            out += [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys] or ["config differs"]
        except (TypeError, json.JSONDecodeError):
            out.append("config differs")
    return out


# ---- checkpoints -----------------------------------------------------------------------


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint file (``weights_only=True``); a missing or unreadable file is a :class:`DataError`."""
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


def check_checkpoint(state: dict, path: str | Path, fingerprint: dict[str, Any] | None = None) -> dict:
    """Validate a training checkpoint before use: schema, version, keys and types, and (given) the fingerprint.

    A foreign or mismatched checkpoint is a :class:`UsageError` (``--overwrite`` starts anew); a damaged one a
    :class:`DataError`.
    """
    fmt = state.get("format")
    if fmt != CHECKPOINT_FORMAT:
        what = f"schema {fmt!r}" if isinstance(fmt, str) else "no schema"
        raise UsageError(
            f"{path} is not a resumable checkpoint of this version ({what}, expected {CHECKPOINT_FORMAT!r}); "
            "use --overwrite to start anew"
        )
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise DataError(f"checkpoint {path} lacks {', '.join(missing)}; it is damaged, use --overwrite")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise DataError(f"checkpoint {path}: step must be a non-negative integer, got {state['step']!r}")
    for key in ("model", "optimizer", "scheduler", "rng", "running"):
        if not isinstance(state[key], dict):
            raise DataError(f"checkpoint {path}: {key} must be a dict, got {type(state[key]).__name__}")
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise DataError(f"checkpoint {path}: the model entry is not a state dict of tensors")
    if not isinstance(state["train_seconds"], (int, float)) or not math.isfinite(state["train_seconds"]):
        raise DataError(f"checkpoint {path}: train_seconds must be a finite number")
    if fingerprint is not None:
        diffs = fingerprint_diff(state["fingerprint"], fingerprint)
        if diffs:
            raise UsageError(
                f"--resume: {path} belongs to another run ({'; '.join(diffs[:4])}"
                f"{'; ...' if len(diffs) > 4 else ''}); use --overwrite to start anew"
            )
    return state


def _finite_tensor(value: torch.Tensor) -> bool:
    return not value.is_floating_point() or bool(torch.isfinite(value).all())


def check_resumable(
    state: dict, path: str | Path, model: nn.Module, planned: int, fingerprint: dict[str, Any] | None = None
) -> None:
    """The parts of a checkpoint that resume loads, checked against ``model`` before any of it is used.

    ``planned`` is the number of steps of the run the checkpoint belongs to (its stored ``config.json``): a step
    beyond it is damage. The Adam state must cover the model's parameters, hold moments after step 0, each of its
    parameter's shape and finite; the scheduler must be at the checkpoint's step; the running loss sums must be
    finite numbers. Anything else is a :class:`DataError` (use ``--overwrite``); a checkpoint of another run
    (``fingerprint``) a :class:`UsageError`.
    """
    check_checkpoint(state, path, fingerprint)
    advice = "the checkpoint is damaged; use --overwrite to start anew"
    step = state["step"]
    if step > planned:
        raise DataError(f"{path}: step {step} is beyond the {planned} steps of this run; {advice}")
    check_state(model, state["model"], str(path))
    params = [p for p in model.parameters()]
    opt = state["optimizer"]
    groups, per_param = opt.get("param_groups"), opt.get("state")
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        raise DataError(f"{path}: the optimiser state has no parameter groups; {advice}")
    indices = [i for g in groups for i in g["params"]]
    if sorted(indices) != list(range(len(params))) or not isinstance(per_param, dict):
        raise DataError(
            f"{path}: the optimiser state is for {len(indices)} parameters, the model has {len(params)}; {advice}"
        )
    if step > 0 and not per_param:  # (a parameter that never had a gradient has no entry: not every one is due)
        raise DataError(f"{path}: the optimiser state holds no moments after {step} steps; {advice}")
    for index, moments in per_param.items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(moments, dict):
            raise DataError(f"{path}: malformed optimiser state entry {index!r}; {advice}")
        for key, value in moments.items():
            if key == "step":
                ok = isinstance(value, (int, float, torch.Tensor)) and (
                    not isinstance(value, torch.Tensor) or value.numel() == 1
                )
            else:
                ok = isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(params[index].shape)
            if not ok or (isinstance(value, torch.Tensor) and not _finite_tensor(value)):
                raise DataError(
                    f"{path}: optimiser state {key!r} of parameter {index} does not fit the model "
                    f"(shape {tuple(params[index].shape)}, finite); {advice}"
                )
    sched = state["scheduler"]
    if (
        sched.get("last_epoch") != step
        or not isinstance(sched.get("base_lrs"), list)
        or len(sched["base_lrs"]) != len(groups)
    ):
        raise DataError(f"{path}: the learning-rate schedule is not at step {step}; {advice}")
    running = state["running"]
    total, count = running.get("sum"), running.get("count")
    if not (isinstance(total, (int, float)) and math.isfinite(total) and isinstance(count, int) and count >= 0):
        raise DataError(f"{path}: the running loss sums are not finite numbers; {advice}")


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (with :data:`CHECKPOINT_FORMAT`) atomically: a crash keeps the previous checkpoint."""
    buffer = io.BytesIO()  # serialised first: torch.save on a full disk raises a bare RuntimeError, a write OSError
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def model_state(state: dict) -> dict[str, torch.Tensor]:
    """The model weights of a training checkpoint, or the state dict itself."""
    sd = state.get("model", state) if state.get("format") in WEIGHT_FORMATS else state
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
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

    A sample-adaptive model accepts an ``equivariant`` checkpoint (its hypernetwork keeps its identity
    initialisation).
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


# ---- log -------------------------------------------------------------------------------


def read_log_rows(path: str | Path, upto: int | None = None) -> list[dict]:
    """Rows of ``log.csv`` (steps ``<= upto``); a damaged file is a :class:`DataError`."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            row["step"] = int(row["step"])
            float(row["loss"])
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as err:
        raise DataError(f"cannot read {path} (a damaged training log): {type(err).__name__}: {err}") from None
    return [r for r in rows if upto is None or r["step"] <= upto]


def write_log(path: str | Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in LOG_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def read_log(run_dir: str | Path):
    """``log.csv`` of a run as a DataFrame (empty when absent); damaged contents are a :class:`DataError`."""
    import pandas as pd

    path = Path(run_dir) / LOG_FILE
    rows = read_log_rows(path)
    frame = pd.DataFrame(rows, columns=LOG_COLUMNS)
    for col in ("loss", "lr", "time_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def read_json_object(path: str | Path, what: str) -> dict:
    """A JSON file that must hold an object (``metrics.json``, ``config.json``); otherwise a :class:`DataError`."""
    path = Path(path)
    try:
        data = read_json_file(path, what)
    except UsageError as err:  # missing: the run is incomplete, not a usage mistake
        raise DataError(str(err)) from None
    if not isinstance(data, dict):
        raise DataError(f"{what} {path} holds a JSON {type(data).__name__}, not an object; rerun to rewrite it")
    return data


# ---- loading a run ---------------------------------------------------------------------


def load_config(run_dir: str | Path):
    """The resolved :class:`analysis.config.TrainConfig` of a run directory (validated)."""

    run = Path(run_dir)
    if not (run / CONFIG_FILE).is_file():
        raise UsageError(f"{run} is not a run directory (no {CONFIG_FILE}); train one with python -m analysis.train")
    return TrainConfig.from_json(run / CONFIG_FILE).resolved()


def load_run(run_dir: str | Path, device: torch.device | None = None) -> tuple[Any, nn.Module, dict]:
    """Config, model with the checkpoint's weights (eval mode, on ``device``), and the checkpoint of a run."""

    run = Path(run_dir)
    cfg = load_config(run)
    state = read_checkpoint(run / CHECKPOINT_FILE)
    model = network_from_config(cfg)
    sd = model_state(state)
    check_state(model, sd, str(run / CHECKPOINT_FILE))
    model.load_state_dict(sd)
    model.to(device or torch.device("cpu"))
    model.eval()
    return cfg, model, state
