"""Fetch a file once and safely: resumable, SHA-256 verified, renamed into place only when whole.

:func:`download_file` fetches ``url`` to ``target`` through ``target.part`` (HTTP Range resumes an
interrupted transfer), verifies its SHA-256 and renames it; :func:`extract_folder` unzips an archive into a
temporary folder beside the target and renames the wanted folder into place, so a crash never leaves a
half-extracted dataset. The progress bar is :func:`symmetry.runtime.progress`. Every failure is a one-line
:class:`~symmetry.errors.DataError` that says how to retry.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

from symmetry.errors import DataError
from symmetry.runtime import progress

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, target: Path, sha256: str | None = None, *, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``target``: resumable (HTTP Range on ``target.part``), SHA-256 verified, renamed when whole.

    An interrupted transfer keeps ``target.part`` and raises :class:`DataError`; the next
    call resumes it. A checksum mismatch deletes the part and raises.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "symmetry-restoration", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    retry = f"rerun with --download to resume ({part} is kept), or place {target.name} in {target.parent}"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not have:  # 416: nothing left after `have` bytes, the part is whole
            raise DataError(f"download of {url} failed: HTTP {err.code} {err.reason}; {retry}") from None
        resp = None
    except (OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise DataError(
            f"cannot download {url} ({reason}); check the network, or place {target.name} in {target.parent}"
        ) from None
    if resp is not None:
        with resp:
            resumed = bool(have) and resp.status == 206
            if resumed:
                start = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                if start is None or int(start.group(1)) != have:
                    part.unlink()
                    raise DataError(f"{url}: the server resumed at the wrong offset; rerun with --download to restart")
            else:
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            received = have
            try:
                with (
                    progress(total, f"download {target.name}", completed=have, transient=True, unit="bytes") as bar,
                    open(part, "ab" if resumed else "wb") as out,
                ):
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        received += len(chunk)
                        bar.advance(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                raise DataError(f"download of {url} interrupted after {received} bytes ({err}); {retry}") from None
            if total is not None and received < total:
                raise DataError(f"download of {url} interrupted at {received} of {total} bytes; {retry}")
    if sha256:
        got = sha256_file(part)
        if got != sha256.lower():
            part.unlink()
            raise DataError(
                f"{url}: checksum mismatch (sha256 {got}, expected {sha256}); the download was deleted, rerun "
                "with --download, or override the checksum (symmetry.datasets.DIV2K_SHA256) for a different archive"
            )
    else:
        warnings.warn(f"{url}: no checksum known, the download is not verified", stacklevel=2)
    os.replace(part, target)
    return target


def extract_folder(archive: Path, root: Path, folder: str) -> Path:
    """Unzip ``archive`` into a temporary folder beside ``root/folder``, then rename ``folder`` into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".extracting", dir=root))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        src = tmp / folder
        if not src.is_dir():
            raise DataError(f"{archive} has no {folder}/ folder inside; is it the right archive? delete it and rerun")
        os.replace(src, root / folder)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise DataError(f"{archive}: cannot extract ({err}); delete it and rerun with --download") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / folder
