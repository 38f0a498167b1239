"""The run folder: stage manifests, fingerprints of inputs, and the completion marker.

Each stage writes ``<stage>/stage.json`` holding a key: the sha256 of everything
that determines its output (its config sections, the fingerprints of its input
files, the keys of the stages it reads, the seed). A stage whose manifest key
equals the key it would write now, and whose outputs exist, is reused; any other
difference recomputes it. ``run_log.json`` says ``"status": "running"`` from the
moment a run starts writing and ``"complete"`` only after its last stage: every
reader (``eocausal evaluate``, :func:`read_results`) checks it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from eocausal.atomic import file_sha256, json_default, remove_stale_temporaries, write_json
from eocausal.errors import EocausalError

__all__ = [
    "MANIFEST",
    "file_fingerprint",
    "fingerprint",
    "is_current",
    "mark_complete",
    "mark_failed",
    "mark_running",
    "read_results",
    "run_status",
    "versions",
    "write_manifest",
]

MANIFEST = "stage.json"
RUN_LOG = "run_log.json"
#: files up to this size are fingerprinted by content (sha256), larger ones by size and mtime
CONTENT_HASH_LIMIT = 512 * 2**20


def fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, default=json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_fingerprint(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """What identifies an input file: its content hash, or size and mtime when it is large."""
    if path is None:
        return None
    p = Path(path)
    st = p.stat()
    if st.st_size <= CONTENT_HASH_LIMIT:
        return {"name": p.name, "sha256": file_sha256(p)}
    return {"name": p.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def versions() -> dict[str, str | None]:
    """Versions of the packages that determine the numbers."""
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for pkg in ("eocausal", "numpy", "pandas", "scikit-learn", "econml", "torch", "timm",
                "lightning", "rasterio"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["python"] = platform.python_version()
    return out


def is_current(stage_dir: Path, key: str, outputs: list[str]) -> bool:
    """True when ``stage_dir`` holds a manifest with ``key`` and every file in ``outputs``."""
    path = stage_dir / MANIFEST
    if not path.is_file() or not all((stage_dir / o).exists() for o in outputs):
        return False
    try:
        return json.loads(path.read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def write_manifest(stage_dir: Path, key: str, inputs: dict[str, Any]) -> Path:
    """Record the key of a finished stage and what it was computed from (written last)."""
    return write_json({"key": key, "inputs": inputs, "versions": versions()}, stage_dir / MANIFEST)


def mark_running(run_dir: Path) -> None:
    """Say that a run is writing ``run_dir``: until :func:`mark_complete`, it is not a result."""
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)
    write_json({"status": "running", "started_unix": time.time(), "pid": os.getpid()}, run_dir / RUN_LOG)


def mark_complete(run_dir: Path, timings: dict[str, float]) -> None:
    """The last write of a run: its status and timings (kept out of results.json)."""
    write_json({"status": "complete", "timings_s": timings, "finished_unix": time.time()}, run_dir / RUN_LOG)


def mark_failed(run_dir: Path, error: BaseException) -> None:
    """Record why a run stopped (a failed run's folder never reads as complete)."""
    status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
    message = str(error).splitlines()[0][:500] if str(error) else type(error).__name__
    write_json({"status": status, "error": message, "finished_unix": time.time()}, run_dir / RUN_LOG)


def run_status(run_dir: Path) -> str:
    """``"complete"``, ``"running"`` (or killed while running), or ``"missing"``."""
    try:
        return str(json.loads((Path(run_dir) / RUN_LOG).read_text()).get("status", "missing"))
    except (OSError, ValueError):
        return "missing"


def read_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``results.json`` of a complete run; an error naming the folder otherwise."""
    run_dir = Path(run_dir)
    status = run_status(run_dir)
    if status != "complete":
        raise EocausalError(
            f"run folder {str(run_dir)!r} is not a complete run (status: {status}); it was "
            "interrupted or failed: rerun `eocausal run` with the same config to finish it."
        )
    return json.loads((run_dir / "results.json").read_text())
