"""The resolved configuration of a training run (what ``config.json`` in a run directory holds)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symmetry.errors import DataError, UsageError

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
        "init_from",
    }
)
"""Fields that may change when a run is resumed: they do not change what a step computes.
(``steps``/``epochs`` may extend a run; the schedule then follows the new length.)"""


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
    # bookkeeping
    log_every: int = 10
    val_every: int = 100
    val_images: int = 4
    val_crop: int | None = 128
    ckpt_every: int = 100
    extra: dict[str, Any] = field(default_factory=dict)

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
        clean = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(clean) - known)
        if unknown:
            raise UsageError(f"{source}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**clean)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"config file {path} does not exist") from None
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read config file {path}: {err}") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ---- validation --------------------------------------------------------------------

    def resolved(self) -> TrainConfig:
        """Validated copy with defaults filled in (scale per task); bad values raise :class:`UsageError`."""
        from analysis.models import MODEL_KINDS
        from analysis.tasks import SR_SCALES, TASKS, check_augment_group
        from symmetry.groups import get_group

        c = dataclasses.replace(self)
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
        return c

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run computes (all but :data:`RUN_INDEPENDENT`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_INDEPENDENT}


def diff_configs(a: dict[str, Any], b: dict[str, Any], ignore=frozenset()) -> list[str]:
    """``key: a -> b`` for every differing key (keys missing on one side included)."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


class CliParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors are one-line :class:`UsageError` messages (exit code 2)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


__all__ = ["CliParser", "TrainConfig", "diff_configs", "SCHEDULES", "LOSSES", "RUN_INDEPENDENT"]
