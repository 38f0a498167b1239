"""Atomic writes: whole file or old file, temporaries named by host and pid, stale ones removed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eocausal.atomic import (
    atomic_path,
    remove_stale_temporaries,
    write_csv,
    write_json,
    write_parquet,
)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_json({"x": np.float32(1.5), "n": np.int64(3)}, target)
    assert target.read_text() == '{\n  "x": 1.5,\n  "n": 3\n}'
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json"
        assert tmp.name == f".a.json.tmp-{socket.gethostname()}-{os.getpid()}.json"
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == '{\n  "x": 1.5,\n  "n": 3\n}'
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_csv_and_parquet_round_trip(tmp_path):
    frame = pd.DataFrame({"unit_id": ["a", "b"], "v": [1.0, 2.0]})
    write_csv(frame, tmp_path / "t.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), frame)
    write_parquet(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").to_pandas().equals(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.parquet"]


@pytest.mark.parametrize("recursive", [True, False])
def test_only_temporaries_of_dead_writers_on_this_host_are_removed(tmp_path, recursive):
    dead = _dead_pid()
    host = socket.gethostname()
    files = {
        "dead": tmp_path / f".e.parquet.tmp-{host}-{dead}",
        "dead_with_suffix": tmp_path / f".e.parquet.tmp-{host}-{dead}.parquet",
        "dead_old_naming": tmp_path / f".manifest.json.tmp-{dead}",
        "dead_in_subfolder": tmp_path / "shards" / f".r0.parquet.tmp-{host}-{dead}.parquet",
        "alive": tmp_path / f".e.parquet.tmp-{host}-{os.getpid()}",
        "other_host": tmp_path / f".e.parquet.tmp-{host}x-{dead}",
        "not_a_temporary": tmp_path / "e.parquet",
    }
    for f in files.values():
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path, recursive=recursive)
    expected = ["dead", "dead_with_suffix", "dead_old_naming"] + ["dead_in_subfolder"] * recursive
    assert sorted(removed) == sorted(files[k] for k in expected)
    assert all(f.exists() == (k not in expected) for k, f in files.items())
    assert remove_stale_temporaries(tmp_path / "missing") == []
