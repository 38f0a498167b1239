"""Atomic file writes (write beside the target, then rename over it) and file digests.

A reader (or a rerun after ``kill -9``) sees either the old file or the whole new
one, never a partial file. Temporary files are named
``.{name}.tmp-{host}-{pid}{suffix}`` in the target's folder (a rename is atomic
only within one file system), so :func:`remove_stale_temporaries` can find the
leftovers of a killed process, and never touches those of a live process or of
another host (the ranks of a job spread over several nodes share the folder).
Uses only the standard library and numpy (pandas and pyarrow objects are written
through their own methods): every stage may import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "file_sha256",
    "json_default",
    "remove_stale_temporaries",
    "write_bytes",
    "write_csv",
    "write_json",
    "write_parquet",
    "write_text",
]

_TMP_MARK = ".tmp-"
# what follows the mark: [host-]pid[.suffix]; names without a host are those of older versions
_TAG = re.compile(r"(?:(?P<host>.+)-)?(?P<pid>\d+)(?:\.[^.]*)?")


def _temporary_name(path: Path) -> Path:
    """The temporary sibling of ``path`` for this host and process (keeps the suffix)."""
    return path.with_name(
        f".{path.name}{_TMP_MARK}{socket.gethostname()}-{os.getpid()}{path.suffix}"
    )


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    The temporary keeps the target's suffix (some writers, e.g. GDAL or matplotlib, choose
    the format from it). On an exception the temporary is removed and ``path`` is untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(text.encode("utf-8"), path)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def json_default(value: Any) -> Any:
    """JSON encoding of numpy scalars and arrays and of paths."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(obj: Any, path: str | os.PathLike, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (numpy values converted) to ``path`` atomically."""
    return write_text(json.dumps(obj, indent=indent, default=json_default, allow_nan=True), path)


def write_csv(frame, path: str | os.PathLike, **to_csv: Any) -> Path:
    """Write a DataFrame as CSV (without its index unless asked) to ``path`` atomically."""
    to_csv.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv)
    return Path(path)


def write_parquet(table, path: str | os.PathLike) -> Path:
    """Write a pyarrow ``table`` as Parquet to ``path`` atomically."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def remove_stale_temporaries(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that killed writers left under ``folder``.

    A temporary ``.<name>.tmp-<host>-<pid>[<suffix>]`` (or ``.<name>.tmp-<pid>[<suffix>]``,
    as older versions named them) is stale when it was written on this host by a process
    that no longer runs. Files of live processes and of other hosts are left alone.

    Parameters
    ----------
    folder : path-like
        Folder to clean; a missing folder is fine.
    recursive : bool, default=True
        Also clean the sub-folders.

    Returns
    -------
    list of Path
        The files deleted.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    host = socket.gethostname()
    pattern = f".*{_TMP_MARK}*"
    removed = []
    for tmp in root.rglob(pattern) if recursive else root.glob(pattern):
        tag = _TAG.fullmatch(tmp.name.rpartition(_TMP_MARK)[2])
        if tag is None or tag["host"] not in (None, host) or not tmp.is_file():
            continue
        if _pid_alive(int(tag["pid"])):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
