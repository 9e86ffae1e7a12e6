"""Resumable measurement: the running sums of a run saved to a file, loaded back only if they belong to it.

A checkpoint is written with ``torch.save`` and read with ``torch.load(..., weights_only=True)``: plain
containers, numbers, strings and tensors, never an arbitrary object, so a crafted file cannot run code.
What it holds is then validated before use (a dict of the expected keys and version, the run's
fingerprint, tensors of the expected shapes); anything else is a one-line :class:`DataError`.

The fingerprint is a hash of every option that changes a number (dataset, split, channels, image list,
group, meshes, estimator settings, bandwidth, dtype, shard). Each image done is also recorded by content
(file size and modification time as the fast path, the SHA-256 of the file, or of the pixels of an
in-memory image, when those differ). A checkpoint is marked ``finished`` when its run completes; rerunning
then reuses it only if every image is unchanged, and otherwise recomputes and overwrites it. An unfinished
checkpoint whose fingerprint or images differ is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from symmetry.errors import DataError, UsageError
from symmetry.io import atomic_write_bytes

VERSION = 2
"""Format version; files of another version are refused (start over)."""

_KEYS = ("version", "fingerprint", "finished", "done", "skipped", "images", "mmd", "moments")


def fingerprint(options: dict[str, Any]) -> str:
    """A short hash of the run's options (JSON with sorted keys; tuples become lists)."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_record(source) -> dict[str, Any]:
    """What identifies an image's content: ``name``, and ``size``/``mtime_ns``/``sha256`` of its file or pixels."""
    record: dict[str, Any] = {"name": str(getattr(source, "name", ""))}
    array = getattr(source, "array", None)
    path = getattr(source, "path", None)
    if isinstance(array, torch.Tensor):
        record["sha256"] = hashlib.sha256(array.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    elif path is not None and Path(path).is_file():
        stat = os.stat(path)
        record.update(size=int(stat.st_size), mtime_ns=int(stat.st_mtime_ns), sha256=_sha256_file(Path(path)))
    return record


def same_image(record: dict, source) -> bool:
    """True when ``source`` still has the content ``record`` describes (size and mtime first, then the hash)."""
    if record.get("name") != str(getattr(source, "name", "")):
        return False
    array, path = getattr(source, "array", None), getattr(source, "path", None)
    if isinstance(array, torch.Tensor):
        return record.get("sha256") == image_record(source)["sha256"]
    if path is not None and "sha256" in record:
        try:
            stat = os.stat(path)
        except OSError:
            return False
        if stat.st_size == record.get("size") and stat.st_mtime_ns == record.get("mtime_ns"):
            return True
        return stat.st_size == record.get("size") and _sha256_file(Path(path)) == record["sha256"]
    return "sha256" not in record


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (the keys of :data:`_KEYS` but ``version``) atomically."""
    buffer = io.BytesIO()  # serialised first: torch.save on a full disk raises a bare RuntimeError, a write OSError
    torch.save({"version": VERSION, **state}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint without executing anything, and check its layout (not yet its fingerprint)."""
    advice = "delete it to start over"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable or unsafe file gets the same advice
        raise DataError(
            f"checkpoint {path} is unreadable or not a measurement checkpoint ({type(err).__name__}); {advice}"
        ) from None
    if not isinstance(state, dict):
        raise DataError(f"checkpoint {path} holds a {type(state).__name__}, not a measurement checkpoint; {advice}")
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise DataError(f"checkpoint {path} lacks {', '.join(missing)}; {advice}")
    if state["version"] != VERSION:
        raise DataError(f"checkpoint {path} has format version {state['version']!r}, expected {VERSION}; {advice}")
    kinds = {
        "fingerprint": str,
        "finished": bool,
        "done": int,
        "skipped": list,
        "images": list,
        "mmd": list,
        "moments": list,
    }
    for key, kind in kinds.items():
        if not isinstance(state[key], kind) or (kind is int and isinstance(state[key], bool)):
            raise DataError(
                f"checkpoint {path}: {key!r} is a {type(state[key]).__name__}, expected {kind.__name__}; {advice}"
            )
    if not all(isinstance(r, dict) for r in state["images"]) or not all(isinstance(s, str) for s in state["skipped"]):
        raise DataError(f"checkpoint {path}: malformed image records; {advice}")
    if state["done"] != len(state["images"]) + len(state["skipped"]):  # each image done is recorded or skipped
        raise DataError(f"checkpoint {path}: inconsistent image count; {advice}")
    counts = {
        saved.get("images")
        for per_group in state["mmd"]
        if isinstance(per_group, list)
        for saved in per_group
        if isinstance(saved, dict)
    }
    if counts - {len(state["images"])}:  # the sums must be over exactly the images recorded
        raise DataError(f"checkpoint {path}: the running sums cover another number of images than recorded; {advice}")
    return state


def matches(state: dict, fp: str, sources, mine) -> bool:
    """True when the checkpoint belongs to this run: same fingerprint and every recorded image unchanged."""
    if state["fingerprint"] != fp:
        return False
    by_name = {}
    for index in mine:
        by_name.setdefault(str(getattr(sources[index], "name", "")), sources[index])
    return all(r.get("name") in by_name and same_image(r, by_name[r.get("name")]) for r in state["images"])


def check_state(path, template: dict[str, Any], state: dict[str, Any], what: str) -> None:
    """Every tensor of ``state`` has the shape and the other fields the type of ``template``; else DataError."""
    if not isinstance(state, dict) or set(state) != set(template):
        raise DataError(f"checkpoint {path}: malformed {what} statistics; delete it to start over")
    for key, value in template.items():
        got = state[key]
        if isinstance(value, torch.Tensor):
            ok = isinstance(got, torch.Tensor) and got.shape == value.shape and got.dtype == value.dtype
            ok = ok and (not got.is_floating_point() or bool(torch.isfinite(got).all()))  # NaN sums: damage
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            ok = isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got)
        else:
            ok = isinstance(got, type(value))
        if not ok:
            raise DataError(f"checkpoint {path}: {what} field {key!r} does not match this run; delete it to start over")


def refuse(path) -> UsageError:
    return UsageError(
        f"checkpoint {path} belongs to a different or changed measurement (options, images or their contents "
        "differ) and is unfinished; delete it or choose another --checkpoint"
    )
