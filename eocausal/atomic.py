"""Atomic file writes: write beside the target, then rename over it.

A reader (or a rerun after ``kill -9``) sees either the old file or the whole new
one, never a partial file. Temporary files are named ``.{name}.tmp-{pid}{suffix}``
in the target's folder (a rename is atomic only within one file system), so
:func:`remove_stale_temporaries` can find the leftovers of a killed process.
Uses only the standard library, numpy and pandas: every stage may import it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "json_default",
    "remove_stale_temporaries",
    "write_bytes",
    "write_csv",
    "write_json",
    "write_text",
]

_TMP_MARK = ".tmp-"


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
    tmp = path.with_name(f".{path.stem}{_TMP_MARK}{os.getpid()}{path.suffix}")
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


def remove_stale_temporaries(folder: str | os.PathLike, *, alive: Callable[[int], bool] | None = None) -> list[Path]:
    """Delete the temporaries of processes that no longer run under ``folder`` (recursively).

    Returns the removed paths. A temporary of a live process (``alive(pid)`` true; by
    default: the pid exists) is left alone.
    """
    alive = alive or _pid_alive
    removed = []
    root = Path(folder)
    if not root.exists():
        return removed
    for p in root.rglob(f".*{_TMP_MARK}*"):
        pid_text = p.name.split(_TMP_MARK, 1)[1].split(".", 1)[0]
        if pid_text.isdigit() and not alive(int(pid_text)) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
