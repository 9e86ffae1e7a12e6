"""The resolved configuration of a training run (what ``config.json`` in a run directory holds)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.basis import BASES
from analysis.models import MATCHES, MODEL_KINDS, TAILS
from analysis.tasks import SR_SCALES, TASKS, check_augment_group
from symmetry.errors import UsageError
from symmetry.groups import get_group
from symmetry.io import read_json_file
from symmetry.runtime import CliParser

SCHEDULES = ("step", "cosine", "constant")
DEFAULT_STEPS = 300
"""Training length when neither ``steps`` nor ``epochs`` is given."""
LOSSES = ("l1", "l2")
CHANNELS = ("rgb", "gray")

RUN_INDEPENDENT = frozenset(
    {
        "out",
        "steps",
        "epochs",
        "device",
        "data_root",
        "log_every",
        "val_every",
        "ckpt_every",
    }
)
"""Fields that may change when a run is resumed: they do not change what a step computes.
(``steps``/``epochs`` may extend a run; the schedule then follows the new length.) ``init_from`` is part of
the identity: a fine-tuned run is another run than one trained from scratch."""
OPTIONAL_IDENTITY = ("init_from", "average")
"""Identity fields left out while ``None``, so runs written before they existed keep their fingerprint."""
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(width=4, depth=2, patch_size=32, batch_size=8, steps=200, val_images=2, val_crop=96, val_every=100),
}
"""Named option sets (``--preset``): they replace the defaults; a config file and explicit options win over them.
``cpu``: a small network that trains in minutes on a 2-core CPU (docs/performance.md, 'A CPU preset')."""
MODEL_OPTION_DEFAULTS: dict[str, str] = {"basis": "fourier", "tail": "equivariant", "match": "parameters"}
"""``model_options`` with a command-line flag (``--basis``, ``--tail``, ``--match``) and their defaults."""


@dataclass
class TrainConfig:
    """Everything that determines a training run. ``None`` fields are resolved by :meth:`resolved`."""

    out: str = "runs/default"
    task: str = "denoise"
    model: str = "plain"
    group: str = "rot4"
    # data
    data: str = "skimage"
    data_root: str | None = None
    test_data: str | None = None
    channels: str = "rgb"
    max_images: int | None = None
    # degradation
    scale: int | None = None
    sigma: float = 25.0
    # model
    width: int = 16
    depth: int = 4
    kernel_size: int = 5
    # optimisation
    patch_size: int = 48
    batch_size: int = 16
    steps: int | None = None  # wins over epochs when both are set
    epochs: float | None = None  # one epoch visits every training image once (one patch each)
    lr: float = 1e-3
    schedule: str = "cosine"
    lr_step: int | None = None
    lr_gamma: float = 0.5
    loss: str = "l1"
    augment: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    init_from: str | None = None
    """Run directory (or checkpoint file) whose weights start this run, e.g. ``sa`` from a ``tl`` run."""
    average: str | None = None
    """Train ``GroupAverage(model, average)`` (Lemma 4.1, ``|G|`` forward passes per step)."""
    # bookkeeping
    log_every: int = 10
    val_every: int = 100
    val_images: int = 4
    val_crop: int | None = 128
    ckpt_every: int = 100
    model_options: dict[str, Any] = field(default_factory=dict)
    """Further options of :func:`analysis.models.build_model` for this model kind (passed through unchanged)."""

    # ---- construction ------------------------------------------------------------------

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a mapping; unknown keys are a :class:`UsageError` naming them."""
        if not isinstance(data, dict):
            raise UsageError(f"{source} must be a JSON object of options, got {type(data).__name__}")
        known = set(cls.fields())
        clean = {str(k).replace("-", "_"): v for k, v in data.items()}
        if clean.get("extra") == {}:  # written by older versions, never used
            del clean["extra"]
        unknown = sorted(set(clean) - known)
        if unknown:
            raise UsageError(f"{source}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key, value in clean.items():
            clean[key] = _check_type(key, value, source)
        return cls(**clean)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        return cls.from_dict(read_json_file(path, "config file"), str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ---- validation --------------------------------------------------------------------

    def resolved(self) -> TrainConfig:
        """Validated copy with defaults filled in (scale per task); bad values raise :class:`UsageError`."""

        for key in self.fields():
            _check_type(key, getattr(self, key), "config")
        c = dataclasses.replace(self)
        _check_ranges(c)
        if c.task not in TASKS:
            raise UsageError(f"unknown task {c.task!r}; choose one of {', '.join(TASKS)}")
        if c.model not in MODEL_KINDS:
            raise UsageError(f"unknown model {c.model!r}; choose one of {', '.join(MODEL_KINDS)}")
        get_group(c.group)
        if c.task == "sr":
            c.scale = 2 if c.scale is None else int(c.scale)
            if c.scale not in SR_SCALES:
                raise UsageError(f"scale {c.scale} is not supported for sr; choose one of {SR_SCALES}")
            if c.patch_size % c.scale:
                raise UsageError(f"--patch-size {c.patch_size} (HR patch) must be a multiple of the scale {c.scale}")
        else:
            if c.scale not in (None, 1):
                raise UsageError(f"--scale applies to --task sr only (task {c.task} works at scale 1)")
            c.scale = 1
        if c.task == "derain" and c.data != "rain100l":
            raise UsageError(f"--task derain needs paired data: --data rain100l (got {c.data!r})")
        if c.channels not in CHANNELS:
            raise UsageError(f"channels must be one of {', '.join(CHANNELS)}, got {c.channels!r}")
        if c.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {c.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if c.loss not in LOSSES:
            raise UsageError(f"unknown loss {c.loss!r}; choose one of {', '.join(LOSSES)}")
        if c.augment in ("", "none"):
            c.augment = None
        if c.augment is not None:
            check_augment_group(c.augment)
        if not (isinstance(c.sigma, (int, float)) and math.isfinite(c.sigma) and c.sigma >= 0):
            raise UsageError(f"--sigma must be a finite number >= 0 (0-255 units), got {c.sigma}")
        positive = dict(
            width=c.width,
            kernel_size=c.kernel_size,
            patch_size=c.patch_size,
            batch_size=c.batch_size,
            log_every=c.log_every,
            val_every=c.val_every,
            ckpt_every=c.ckpt_every,
        )
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if c.depth < 0 or c.val_images < 0:
            raise UsageError("--depth and --val-images must be >= 0")
        if c.kernel_size % 2 == 0:
            raise UsageError(f"--kernel-size must be odd, got {c.kernel_size}")
        if not (isinstance(c.lr, (int, float)) and c.lr > 0 and math.isfinite(c.lr)):
            raise UsageError(f"--lr must be a positive number, got {c.lr}")
        if c.steps is not None and (not isinstance(c.steps, int) or c.steps < 1):
            raise UsageError(f"--steps must be a positive integer, got {c.steps!r}")
        if c.epochs is not None and not c.epochs > 0:
            raise UsageError(f"--epochs must be positive, got {c.epochs}")
        if c.val_crop is not None and c.val_crop < 1:
            c.val_crop = None
        if c.max_images is not None and c.max_images < 1:
            raise UsageError(f"--max-images must be >= 1, got {c.max_images}")
        if c.init_from == "":
            c.init_from = None
        if c.average in ("", "none"):
            c.average = None
        if c.average is not None:
            check_average_group(c.average)
        c.model_options = check_model_options(c.model, c.model_options)
        return c

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run computes (all but :data:`RUN_INDEPENDENT`)."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in RUN_INDEPENDENT and not (k in OPTIONAL_IDENTITY and v is None)
        }

    def model_option(self, name: str) -> Any:
        """``model_options[name]`` or its default (:data:`MODEL_OPTION_DEFAULTS`)."""
        return (self.model_options or {}).get(name, MODEL_OPTION_DEFAULTS.get(name))


def check_average_group(group: str) -> None:
    """``group`` must be grid-exact (a subgroup of dih4) for ``GroupAverage``; one-line :class:`UsageError`."""

    try:
        g = get_group(group)
    except (ValueError, UsageError) as err:
        raise UsageError(f"--average: {err}") from None
    inexact = [el.name for el in g if not el.is_grid_exact]
    if inexact:
        raise UsageError(
            f"--average needs a grid-exact group (flip, flipud, rot2, rot4, dih2, dih4), got {group!r} "
            f"({', '.join(inexact[:3])} are not pixel permutations)"
        )


def check_model_options(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``basis``/``tail``/``match`` in ``options`` and drop those equal to their default.

    Dropping defaults keeps one identity per network (``--basis fourier`` and no flag are the same run).
    """

    out = dict(options or {})
    choices = {"basis": BASES, "tail": TAILS, "match": MATCHES}
    for name, allowed in choices.items():
        if name not in out:
            continue
        if out[name] not in allowed:
            raise UsageError(f"--{name} must be one of {', '.join(allowed)}, got {out[name]!r}")
        if out[name] == MODEL_OPTION_DEFAULTS[name]:
            del out[name]
    if "match" in out and model != "plain":
        raise UsageError(f"--match applies to --model plain only (the baseline's width), not {model!r}")
    if model == "e2cnn" and ("basis" in out or "tail" in out):
        raise UsageError("--model e2cnn has its own basis and an equivariant tail; drop --basis/--tail")
    return out


_TYPES: dict[str, tuple[type, bool]] = {
    **{k: (str, False) for k in ("out", "task", "model", "group", "data", "channels", "schedule", "loss", "device")},
    **{k: (str, True) for k in ("data_root", "test_data", "augment", "init_from", "average")},
    **{k: (int, False) for k in ("width", "depth", "kernel_size", "patch_size", "batch_size", "seed")},
    **{k: (int, False) for k in ("log_every", "val_every", "val_images", "ckpt_every")},
    **{k: (int, True) for k in ("max_images", "scale", "steps", "lr_step", "val_crop")},
    **{k: (float, False) for k in ("sigma", "lr", "lr_gamma")},
    "epochs": (float, True),
    "amp": (bool, False),
    "model_options": (dict, False),
}
"""Type of every field and whether it may be ``None``."""

LIMITS: dict[str, tuple[float, float]] = {
    "width": (1, 1024),
    "depth": (0, 256),
    "kernel_size": (1, 63),
    "patch_size": (1, 4096),
    "batch_size": (1, 4096),
    "seed": (0, 2**63 - 1),
    "steps": (1, 10**9),
    "epochs": (1e-9, 1e6),
    "lr": (1e-12, 10.0),
    "lr_step": (1, 10**9),
    "lr_gamma": (1e-9, 1.0),
    "sigma": (0.0, 1000.0),
    "max_images": (1, 10**7),
    "val_images": (0, 10**5),
    "val_crop": (0, 10**5),
    "log_every": (1, 10**9),
    "val_every": (1, 10**9),
    "ckpt_every": (1, 10**9),
}
"""Allowed ranges (inclusive) of the numeric fields: beyond them a run is meaningless or exhausts memory."""


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _check_type(key: str, value: Any, source: str) -> Any:
    """``value`` if it has ``key``'s type (an integral float counts as an int), else a one-line :class:`UsageError`."""
    kind, optional = _TYPES.get(key, (object, True))
    if value is None and optional:
        return None
    if kind is int and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if not ok:
        names = {int: "an integer", float: "a number", str: "text", bool: "true or false", dict: "a JSON object"}
        want = names.get(kind, kind.__name__) + (" or null" if optional else "")
        raise UsageError(f"{source}: {key} ({_flag(key)}) must be {want}, got {value!r}")
    return value


def _check_ranges(c: TrainConfig) -> None:
    """Every numeric field finite and within :data:`LIMITS` (one-line :class:`UsageError` otherwise)."""
    for key, (low, high) in LIMITS.items():
        value = getattr(c, key)
        if value is None:
            continue
        if not (math.isfinite(value) and low <= value <= high):
            lo, hi = (f"{int(v)}" if float(v).is_integer() and v >= 1 else f"{v:g}" for v in (low, high))
            raise UsageError(f"{_flag(key)} must be a finite number in [{lo}, {hi}], got {value!r}")


def diff_configs(a: dict[str, Any], b: dict[str, Any], ignore=frozenset()) -> list[str]:
    """``key: a -> b`` for every differing key (keys missing on one side included)."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


__all__ = [
    "CliParser",
    "TrainConfig",
    "diff_configs",
    "check_average_group",
    "check_model_options",
    "SCHEDULES",
    "LOSSES",
    "RUN_INDEPENDENT",
    "MODEL_OPTION_DEFAULTS",
]
