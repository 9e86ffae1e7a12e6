"""Safe file output: atomic, through symlinks, locked against concurrent writers, and strict JSON.

- :func:`atomic_path` / :func:`atomic_write_text` / :func:`atomic_write_bytes`: a reader never sees a
  half-written file and a crash never loses the old one. The path's final target is written (a symlink
  stays a link and its target gets the new content); directories, devices (``/dev/null``, ``/dev/full``),
  pipes and sockets are refused, and so is any place where a file cannot be created (``/proc``). A new
  file gets the mode ``open()`` would give it (the umask), a replaced one keeps its mode.
- :func:`output_lock`: an exclusive ``flock`` on the hidden sibling ``.NAME.lock`` of each output, for the
  whole of a command's work; a second process that asks for it fails at once with a one-line error instead
  of computing and then overwriting. Reentrant in one process; every atomic write takes it for its rename.
- :func:`check_writable` (before long work) also records the output's state; the atomic write then refuses
  to replace a file that another process changed since (compare-and-swap on device, inode, size and
  mtime), and keeps the new content beside it as ``STEM.conflict-PID.SUFFIX``.
- :func:`check_distinct_outputs`: two options of one command naming the same file is a usage error;
  :func:`check_outputs_apart_from_inputs`: an output that would replace (or join) the images measured is one too.
- :func:`json_safe` / :func:`to_json`: the project's one JSON rule: NaN -> ``null``, +-inf -> ``"inf"`` (strict JSON).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from symmetry.errors import DataError, UsageError

WRITE_LOCK_WAIT = 10.0
"""Seconds an atomic write waits for another writer's lock before it fails."""

_HELD: dict[Path, list] = {}  # lock file -> [fd, depth]: locks this process holds (flock is per open file)
_SEEN: dict[Path, tuple | None] = {}  # output target -> its state when this process last checked or wrote it
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


# ---- where an output goes -----------------------------------------------------------------


def output_target(path: str | os.PathLike, option: str = "output") -> Path:
    """The regular file that writing ``path`` changes: symlinks followed to their final target.

    A dangling link names the file it points to (which is then created). A directory or anything
    that is not a regular file (device, pipe, socket) is a :class:`UsageError`.
    """
    target = Path(os.path.realpath(os.fspath(path)))
    try:
        st = target.stat()
    except (FileNotFoundError, NotADirectoryError):  # a new file (check_writable judges its folder)
        return target
    except OSError as err:
        raise UsageError(f"cannot write {option} {path}: {err.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{option} {path} is a directory; give a file path")
    if not stat.S_ISREG(st.st_mode):
        via = f" (a link to {target})" if target != Path(os.path.abspath(path)) else ""
        raise UsageError(f"{option} {path}{via} is not a regular file (a device, pipe or socket); give a file path")
    return target


def check_distinct_outputs(**paths: str | os.PathLike | None) -> None:
    """Refuse two outputs of one command that name the same file (``check_distinct_outputs(json=a, csv=b)``).

    Keyword names are the options (``json`` is shown as ``--json``); ``None`` values (outputs not asked
    for) are ignored. Paths are compared after following symlinks, and hard links count as the same file.
    """
    seen: dict[Any, str] = {}
    for name, path in paths.items():
        if path is None or path == "":
            continue
        option = name if name.startswith("-") else "--" + name.replace("_", "-")
        target = Path(os.path.realpath(os.fspath(path)))
        keys = [("path", target)]
        with contextlib.suppress(OSError):
            st = target.stat()
            keys.append(("inode", st.st_dev, st.st_ino))
        for key in keys:
            if key in seen:
                raise UsageError(
                    f"{seen[key]} and {option} both name {path}; one output would overwrite the other, "
                    "give different paths"
                )
        for key in keys:
            seen[key] = option


def check_outputs_apart_from_inputs(
    outputs: dict[str, str | os.PathLike | None], dataset: str, extensions: tuple[str, ...]
) -> None:
    """Refuse an output that would overwrite an input image, or be read as one on the next run.

    ``outputs`` maps option names (``"--json"``) to paths; ``dataset`` is the dataset spec. For a ``folder:PATH``
    dataset, an output (after following symlinks) inside ``PATH`` with an image suffix from ``extensions``, or equal
    to one of the folder's files (a link into it from elsewhere), is a :class:`UsageError`.
    """
    if not str(dataset).startswith("folder:"):
        return
    folder = Path(os.path.realpath(os.path.expanduser(str(dataset)[len("folder:") :])))
    if not folder.is_dir():
        return  # the loader names a missing folder
    inputs = None
    for option, path in outputs.items():
        if path is None or path == "":
            continue
        target = Path(os.path.realpath(os.fspath(path)))
        inside = target.is_relative_to(folder) and target.suffix.lower() in extensions
        if not inside and target.exists():
            if inputs is None:  # the folder's files after following links, listed once
                inputs = {
                    os.path.realpath(os.path.join(d, f))
                    for d, _, files in os.walk(folder)
                    for f in files
                    if f.lower().endswith(extensions)
                }
            inside = str(target) in inputs
        if inside:
            raise UsageError(
                f"{option} {path} names an image of the dataset folder {folder} (it would overwrite an input, "
                "or be read as one by the next run); write it outside that folder or with another suffix"
            )


def check_plot_format(path: str | os.PathLike, option: str = "--plot") -> None:
    """Refuse a figure path whose suffix matplotlib cannot write, before any output is replaced (none: PNG)."""
    from matplotlib.backend_bases import FigureCanvasBase  # only when a figure is asked for (0.3 s to import)

    suffix = Path(os.fspath(path)).suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise UsageError(
            f"{option} {path}: unsupported figure format {suffix!r}; use one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )


# ---- locks ---------------------------------------------------------------------------------


def _lock_file(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _acquire(lock: Path, path, wait: float) -> None:
    if lock in _HELD:
        _HELD[lock][1] += 1
        return
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UsageError(f"cannot write {path}: cannot create the lock {lock} ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if time.monotonic() >= deadline:
                raise DataError(
                    f"{path} is being written by another process (pid {holder}, lock {lock}); wait for it to "
                    "finish or choose another output path"
                ) from None
            time.sleep(0.05)
            continue
        try:  # the holder before us may have removed the lock file: then ours is a stale inode, retry
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _HELD[lock] = [fd, 1]
            return
        os.close(fd)


def _release(lock: Path) -> None:
    entry = _HELD[lock]
    entry[1] -= 1
    if entry[1] == 0:
        del _HELD[lock]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while still holding it: a waiter then sees a removed inode and retries
        os.close(entry[0])


@contextlib.contextmanager
def output_lock(*paths: str | os.PathLike | None, wait: float = 0.0):
    """Hold an exclusive lock on each output path (its final target) for the duration of the block.

    Another process asking for the same output fails with a :class:`DataError` naming the holder's pid
    (after ``wait`` seconds). Reentrant within one process. ``None`` paths are skipped; a directory
    output (a results folder) is locked the same way, by ``.NAME.lock`` beside it.
    """
    locks = []
    try:
        for path in paths:
            if path is None or path == "":
                continue
            target = Path(os.path.realpath(os.fspath(path)))
            target.parent.mkdir(parents=True, exist_ok=True)
            lock = _lock_file(target)
            if lock in locks:
                continue
            _acquire(lock, path, wait)
            locks.append(lock)
        yield
    finally:
        for lock in reversed(locks):
            _release(lock)


# ---- compare-and-swap ------------------------------------------------------------------------


def _state(target: Path) -> tuple | None:
    try:
        st = target.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _conflict(path, target: Path, tmp: Path) -> None:
    """Refuse to replace an output another process wrote since this one checked it; keep ours beside it."""
    if target not in _SEEN:
        return
    expected, now = _SEEN[target], _state(target)
    if now is None or now == expected:  # unchanged, or removed (nothing to lose)
        return
    kept = target.with_name(f"{target.stem}.conflict-{os.getpid()}{target.suffix}")
    os.replace(tmp, kept)
    raise DataError(
        f"{path} was changed by another process while this one ran; it is left as is and this result is in "
        f"{kept}; run one writer per output"
    )


# ---- atomic writes ------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``'s final target; on success it replaces the target in one rename.

    Takes :func:`output_lock` for the compare-and-swap and the rename. Errors writing the temporary file
    (disk full, read-only) are a one-line :class:`DataError`, and the old file is kept.
    """
    target = output_target(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror} in {target.parent}") from None
    tmp = Path(name)
    try:
        os.close(fd)
        os.chmod(tmp, _mode(target))  # mkstemp makes 0600; give the file the mode open() would (or the old file's)
        try:
            yield tmp
        except OSError as err:
            if err.errno not in _WRITE_ERRNOS:
                raise
            raise DataError(f"cannot write {path}: {err.strerror}; the old file is kept") from None
        with output_lock(target, wait=WRITE_LOCK_WAIT):
            _conflict(path, target, tmp)
            os.replace(tmp, target)
            if target in _SEEN:
                _SEEN[target] = _state(target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _mode(target: Path) -> int:
    if target.exists():
        return target.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def check_writable(path: str | os.PathLike, option: str = "output") -> Path:
    """Fail early (before long work) when ``path`` cannot be written; nothing is left created or changed.

    Follows symlinks, refuses directories and non-regular files, probes the target's folder with a
    temporary file (so ``/proc`` or a read-only mount is caught even as root), and records the file's
    state: the later atomic write refuses to replace it if another process changed it meanwhile.
    """
    target = output_target(path, option)
    parent = target.parent
    probe = parent
    while not probe.exists():  # the nearest existing ancestor must accept new entries
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {option} {path}: {probe} is not a writable directory")
    if target.exists() and not os.access(target, os.W_OK):
        raise UsageError(f"cannot write {option} {path}: the file is read-only")
    try:
        with tempfile.NamedTemporaryFile(prefix=f".{target.name}.", suffix=".probe", dir=probe):
            pass
    except OSError as err:
        raise UsageError(f"cannot write {option} {path}: cannot create files in {probe} ({err.strerror})") from None
    _SEEN[target] = _state(target)
    return Path(path)


# ---- reading small text files ----------------------------------------------------------------

MAX_CONFIG_BYTES = 16 << 20
"""Largest configuration or metadata file read (a config is kilobytes; ``/dev/zero`` would never end)."""


def read_text_file(path: str | os.PathLike, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of a small regular file; a missing, special, huge or non-UTF-8 file is a one-line error.

    Missing: :class:`UsageError` (the user named it); anything else: :class:`DataError`.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise DataError(f"cannot read {what} {path}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{what} {path} is not a regular file (a directory, device or pipe); give a file")
    if st.st_size > max_bytes:
        raise DataError(f"{what} {path} is {st.st_size:,} bytes, more than a configuration file can be")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise DataError(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` with every failure (syntax, nesting too deep, an integer too long) as one :class:`DataError`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where} is not valid JSON: {err}") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise DataError(f"{where}: unreadable JSON value ({str(err).splitlines()[0][:120]})") from None


def read_json_file(path: str | os.PathLike, what: str) -> Any:
    """:func:`read_text_file` then :func:`parse_json`."""
    return parse_json(read_text_file(path, what), f"{what} {path}")


# ---- JSON ------------------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """A copy of ``obj`` made of JSON types (see :func:`json_safe`)."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else (None if math.isnan(obj) else ("inf" if obj > 0 else "-inf"))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, torch tensors
        return _plain(obj.tolist())
    raise TypeError(f"json_safe: cannot serialise {type(obj).__name__} {obj!r}")


def json_safe(obj: Any) -> Any:
    """``obj`` made of JSON types, by the toolkit's one rule: NaN -> ``None``, +-inf -> ``"inf"``/``"-inf"``.

    Readers turn ``"inf"`` back with ``float``; tuples become lists; numpy, torch and paths become plain values.
    """
    return _plain(obj)


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` by :func:`json_safe`'s rule."""
    return json.dumps(_plain(obj), indent=indent, allow_nan=False)
