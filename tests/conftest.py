"""Shared fixtures: the location of ../shared/data, skipped cleanly when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`EOCAUSAL_SHARED_DATA` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get("EOCAUSAL_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def uganda_dir() -> Path:
    """The Uganda YOP tutorial data; skips the test when ../shared is absent."""
    path = shared_data_dir() / "uganda_yop_tutorial"
    if not (path / "units.csv").exists() or not (path / "images.npz").exists():
        pytest.skip(f"shared data not found at {path}")
    return path
