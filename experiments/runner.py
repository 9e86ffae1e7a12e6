"""Resumable experiment runner: a config expands into cells, each cell yields tidy rows.

An experiment is a module ``experiments.NAME`` with

- ``cells(config: dict) -> list[dict]``: one JSON-serialisable dict per unit of work. A cell holds every
  parameter its result depends on (seed included), so its hash identifies the result;
- ``run_cell(cell: dict, ctx: Context) -> list[dict]``: the rows of that cell (one row per measurement);
- optionally ``figures(frame, config) -> dict[str, Figure]`` and ``verdict(frame, config) -> str``.

Its config lives in ``experiments/configs/NAME.toml`` with a ``[quick]`` and a ``[full]`` table. Results go to
``results/NAME/{quick,full}.csv``: the cell's parameters, its hash (``cell``) and its rows. The file is rewritten
atomically after every cell, so an interrupted run loses at most the cell in progress, and a rerun computes only
the cells not yet in the file. Rows of cells no longer in the config are kept in the file but not returned.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib
import io
import json
import math
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from symmetry.datasets import data_root as data_root_rule  # run_experiment's parameter is named data_root
from symmetry.errors import DataError, UsageError
from symmetry.io import atomic_write_text, json_safe, output_lock, read_text_file
from symmetry.runtime import progress, resolve_device

EXPERIMENTS = ("symmetry_table", "bound", "bound_lmmse", "bias_variance", "sa_alignment", "restoration_table")
EXPERIMENTS += ("symmetry_power", "calibration", "sr_benchmark")
#: Experiments whose module is not ``experiments.NAME`` (``bound``: Theorem 3.6 in its own setting).
MODULES = {"bound": "bound_theorem"}
SCALES = ("quick", "full")
CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_RESULTS = Path("results")
REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout's root: the notebooks change into it, so ``results/`` and ``figures/`` resolve as on a command line."""
DIGEST_COLUMN = "row_digest"
"""Last column of a results file: a hash of the row's text, so a row changed after it was written is refused."""
ROWS_COLUMN = "cell_rows"
"""How many rows the row's cell wrote, so a truncated or duplicated cell is refused."""
MAX_RESULTS_BYTES = 1 << 30


class SkipCell(Exception):
    """Raised by ``run_cell`` when a cell cannot run here (say, its dataset is absent); it is not stored."""


@dataclass
class Context:
    """What a cell may use besides its own parameters; nothing here changes a result."""

    device: torch.device
    data_root: Path | None = None
    workdir: Path = Path("results/work")
    progress: bool = True
    log: Callable[[str], None] = print

    def data_available(self, relative: str) -> bool:
        """Whether ``relative`` (for example ``rain100l``) exists under the data root."""
        return self.data_root is not None and (self.data_root / relative).exists()


def experiment_module(name: str):
    """The module implementing experiment ``name``."""
    if name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)} or all")
    return importlib.import_module(f"experiments.{MODULES.get(name, name)}")


def load_config(name: str, scale: str = "quick", path: str | Path | None = None) -> dict[str, Any]:
    """The ``[scale]`` table of the experiment's TOML config (``path`` overrides the packaged file).

    A table from ``path`` must hold every key of the packaged one, each of the same kind (number, text, list,
    table); extra keys are allowed.
    """
    table = _read_table(Path(path) if path else CONFIG_DIR / f"{name}.toml", scale)
    if path:
        _check_like(table, _read_table(CONFIG_DIR / f"{name}.toml", scale), f"[{scale}] of {path}")
    return table


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return {str: "text", list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _check_like(table: dict[str, Any], reference: dict[str, Any], where: str) -> None:
    """Every key of ``reference`` is in ``table`` with a value of the same kind (recursively into tables)."""
    missing = [k for k in reference if k not in table]
    if missing:
        raise UsageError(f"{where} lacks {', '.join(missing)}; copy them from the packaged config")
    for key, ref in reference.items():
        if _kind(table[key]) != _kind(ref):
            raise UsageError(f"{where}: {key} must be {_kind(ref)} (like {ref!r}), got {table[key]!r}")
        if isinstance(ref, dict):
            _check_like(table[key], ref, f"{where}.{key}")


def _read_table(path: Path, scale: str) -> dict[str, Any]:
    if scale not in SCALES:
        raise UsageError(f"scale must be quick or full, got {scale!r}")
    text = read_text_file(path, "config file")
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config file {path} is not valid TOML: {err}") from None
    except RecursionError:
        raise UsageError(f"config file {path}: TOML nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise UsageError(f"config file {path}: unreadable TOML value ({str(err).splitlines()[0][:120]})") from None
    if scale not in tables or not isinstance(tables[scale], dict):
        raise UsageError(f"config file {path} has no [{scale}] table")
    return dict(tables[scale])


def cell_key(cell: dict[str, Any]) -> str:
    """A stable 12-hex-digit hash of a cell's parameters."""
    text = json.dumps(cell, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def results_path(name: str, scale: str, out: str | Path = DEFAULT_RESULTS) -> Path:
    return Path(out) / name / f"{scale}.csv"


def read_results(name: str, scale: str = "quick", out: str | Path = DEFAULT_RESULTS) -> pd.DataFrame:
    """Every stored row of an experiment (all cells ever run at this scale)."""
    path = results_path(name, scale, out)
    if not path.exists():
        raise UsageError(f"no results at {path}; run `python -m experiments.run {name} --{scale}` first")
    return _read_csv(path)


def _row_digest(header: list[str], fields: list[str]) -> str:
    """A 16-hex-digit hash of one CSV row as written: every column name with its text (the digest column excluded)."""
    h = hashlib.blake2b(digest_size=8)
    for name, value in zip(header, fields):
        if name != DIGEST_COLUMN:
            h.update(f"{name}\x1f{value}\x1e".encode())
    return h.hexdigest()


def results_csv(frame: pd.DataFrame) -> str:
    """``frame`` as the CSV text of a results file: each row with :data:`DIGEST_COLUMN`, the hash of its text."""
    text = frame.drop(columns=[DIGEST_COLUMN], errors="ignore").to_csv(index=False)
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0] + [DIGEST_COLUMN]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for fields in rows[1:]:
        writer.writerow(fields + [_row_digest(header, fields)])
    return out.getvalue()


def check_results(path: Path, text: str) -> None:
    """Refuse a results file that is not as :func:`run_experiment` wrote it, with one line naming the file.

    Always: NUL bytes, a header without ``cell``, rows of another length than the header, duplicated rows, a cell
    with another number of rows than it wrote (``cell_rows``). Files with :data:`DIGEST_COLUMN` (written since it
    exists): every row's text must match its digest, so an emptied, edited, renamed or dropped column is caught.
    """
    where = f"results {path}"
    advice = "move it away and rerun (stored cells are recomputed)"
    if "\x00" in text:
        raise DataError(f"{where} contain NUL bytes (a damaged file); {advice}")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise DataError(f"{where} are not valid CSV ({err}); {advice}") from None
    if not rows:
        raise DataError(f"{where} are empty; {advice}")
    header, body = rows[0], [r for r in rows[1:] if r]
    if "cell" not in header:
        raise DataError(f"{where} have no 'cell' column (not written by experiments.run); {advice}")
    if len(set(header)) != len(header):
        raise DataError(f"{where} repeat a column name; {advice}")
    for number, fields in enumerate(body, start=2):
        if len(fields) != len(header):
            raise DataError(
                f"{where}, row {number}: {len(fields)} fields where the header has {len(header)} (truncated or "
                f"edited); {advice}"
            )
    seen: set[tuple[str, ...]] = set()
    for number, fields in enumerate(body, start=2):
        if tuple(fields) in seen:
            raise DataError(f"{where}, row {number}: a duplicate of an earlier row; {advice}")
        seen.add(tuple(fields))
    if DIGEST_COLUMN in header:
        for number, fields in enumerate(body, start=2):
            if fields[header.index(DIGEST_COLUMN)] != _row_digest(header, fields):
                raise DataError(
                    f"{where}, row {number}: does not match its digest (edited after it was written); {advice}"
                )
    if ROWS_COLUMN in header:
        cell, expected = header.index("cell"), header.index(ROWS_COLUMN)
        counts: dict[str, int] = {}
        for fields in body:
            counts[fields[cell]] = counts.get(fields[cell], 0) + 1
        for fields in body:
            if fields[expected] and _as_count(fields[expected]) != counts[fields[cell]]:  # blank: an older row
                raise DataError(
                    f"{where}: cell {fields[cell]} has {counts[fields[cell]]} rows, it wrote {fields[expected]} "
                    f"(truncated or duplicated); {advice}"
                )


def _as_count(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _read_csv(path: Path) -> pd.DataFrame:
    """A stored results table, checked by :func:`check_results`; anything wrong is a one-line :class:`DataError`."""
    try:
        text = read_text_file(path, "results", max_bytes=MAX_RESULTS_BYTES)
    except UsageError as err:
        raise DataError(str(err)) from None
    check_results(path, text)
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataError(f"cannot read results {path}: {type(err).__name__}; move it away and rerun") from None
    if "cell_seconds" in frame and not pd.api.types.is_numeric_dtype(frame["cell_seconds"]):
        raise DataError(f"results {path}: cell_seconds holds text; move it away and rerun")
    return frame.drop(columns=[DIGEST_COLUMN], errors="ignore")


def has_digests(path: Path) -> bool:
    """Whether a results file carries :data:`DIGEST_COLUMN` (files written before it existed do not)."""
    with open(path, newline="") as fh:
        return DIGEST_COLUMN in next(csv.reader(fh), [])


def check_cell_columns(path: Path, frame: pd.DataFrame, cells: list[dict[str, Any]]) -> None:
    """Every parameter of the current cells is a column of the stored table (a dropped or renamed one is refused)."""
    if frame.empty:
        return
    stored = set(frame["cell"])
    needed = {key for cell in cells if cell_key(cell) in stored for key in cell}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise DataError(f"results {path} lack the column(s) {', '.join(missing)}; move it away and rerun")


@contextlib.contextmanager
def reading_results(path: Path):
    """Turn a failure of an experiment's summary or figure code on stored rows into one line naming the file.

    Stored rows that pass :func:`check_results` but lack what the code expects (a file written before a column
    existed, by hand, or by another version) end here instead of in a traceback.
    """
    try:
        yield
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
        detail = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        raise DataError(
            f"cannot summarise results {path} ({detail}): a column is missing or holds the wrong kind of value; "
            "move it away and rerun"
        ) from None


@contextlib.contextmanager
def results_lock(path: Path):
    """Hold :func:`symmetry.io.output_lock` on a results table (creating its folder) for a whole run.

    Two runs writing one results folder would each store only their own cells (10 computed, 5 kept); the
    second now fails at once with a one-line :class:`DataError` naming the first one's pid.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the results folder {path.parent}: {err.strerror}; use --results") from None
    with output_lock(path):
        yield


def _flatten(cell: dict[str, Any]) -> dict[str, Any]:
    """Cell parameters as CSV-friendly scalars (lists and dicts become JSON text)."""
    return {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in cell.items()}


def _write(path: Path, frame: pd.DataFrame) -> None:
    """Write the table with its row digests; rows of a file written before ``cell_rows`` existed get their count."""
    sizes = frame.groupby("cell")["cell"].transform("size")
    frame = frame.assign(**{ROWS_COLUMN: frame[ROWS_COLUMN].fillna(sizes) if ROWS_COLUMN in frame else sizes})
    atomic_write_text(path, results_csv(frame))


def run_experiment(
    name: str,
    scale: str = "quick",
    *,
    out: str | Path = DEFAULT_RESULTS,
    config: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    max_cells: int | None = None,
) -> pd.DataFrame:
    """Run (or resume) experiment ``name`` and return the rows of its current cells.

    ``config`` replaces the packaged ``[scale]`` table; ``force`` recomputes every cell; ``max_cells`` stops after
    that many new cells (the rest are computed by a later call).
    """

    module = experiment_module(name)
    cfg = dict(config) if config is not None else load_config(name, scale)
    if max_cells is not None and max_cells < 0:
        raise UsageError(f"max_cells must be >= 0, got {max_cells}")
    try:
        cells = module.cells(cfg)
    except KeyError as err:
        raise UsageError(f"the {scale} config of {name} lacks {err}; see configs/{name}.toml") from None
    except (TypeError, ValueError) as err:
        raise UsageError(f"the {scale} config of {name} has a bad value ({err}); see configs/{name}.toml") from None
    keys = [cell_key(c) for c in cells]
    path = results_path(name, scale, out)
    with results_lock(path):  # the whole read-compute-write: a second run on this folder fails at once
        table = _read_csv(path) if path.exists() else pd.DataFrame({"cell": pd.Series(dtype=str)})
        check_cell_columns(path, table, cells)
        done = set() if force else set(table["cell"])
        pending = [(k, c) for k, c in zip(keys, cells) if k not in done]
        left = len(pending) - max_cells if max_cells is not None and len(pending) > max_cells else 0
        if max_cells is not None:
            pending = pending[:max_cells]
        ctx = Context(
            device=resolve_device(device) if not isinstance(device, torch.device) else device,
            data_root=data_root_rule(data_root),
            workdir=Path(out) / name / "work",
            progress=False,
            log=log,
        )
        stored = sum(k in done for k in keys)
        if pending:
            log(f"{name} ({scale}): {stored} of {len(cells)} cells stored, computing {len(pending)} -> {path}")
            meta = {"experiment": name, "scale": scale, "config": cfg}
            atomic_write_text(path.with_suffix(".json"), json.dumps(json_safe(meta), indent=2, default=str))
        skipped: dict[str, int] = {}
        with _cell_progress(progress and bool(pending), len(pending), name) as advance:
            for key, cell in pending:
                start = time.perf_counter()
                try:
                    rows = module.run_cell(cell, ctx) or [{}]
                except SkipCell as why:
                    skipped[str(why)] = skipped.get(str(why), 0) + 1
                    advance()
                    continue
                seconds = time.perf_counter() - start
                new = pd.DataFrame(
                    [
                        {"cell": key, **_flatten(cell), **row, "cell_seconds": seconds, ROWS_COLUMN: len(rows)}
                        for row in rows
                    ]
                )
                kept = table[table["cell"] != key]
                table = pd.concat([kept, new], ignore_index=True) if len(kept) else new
                _write(path, table)
                advance()
        for why, count in skipped.items():
            log(f"{name}: skipped {count} cell(s): {why}")
        computed = len(pending) - sum(skipped.values())
        more = f"; {left} cell(s) still to compute (rerun to continue)" if left else ""
        forced = " (--force: stored cells recomputed)" if force and computed else ""
        log(f"{name} ({scale}): computed {computed} cell(s){forced}, read {stored} stored from {path}{more}")
        return table[table["cell"].isin(keys)].reset_index(drop=True)


@contextlib.contextmanager
def _cell_progress(enabled: bool, total: int, name: str):
    """A progress bar over cells (inner work runs without its own bar): :func:`symmetry.runtime.progress`."""

    with progress(total, name, enabled=enabled, transient=True) as bar:
        yield bar.advance
