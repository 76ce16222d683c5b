"""remote_steer/rundir: the typed run record and its migration, the vector file, the
journal's files, the lock, and the one reader's repairs (issue 24)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest
import torch

from remote_steer.rundir import SCHEMA_VERSION, Manifest, RunDamaged, RunDir, RunLocked, journal
from remote_steer.rundir.vectorfile import read_vectors, vector_metadata, write_vectors

#: A manifest as the code before issue 24 wrote it (no schema_version, untyped).
SCHEMA_1 = {
    "tool": "remote-steer",
    "created_at": "2026-11-30T10:00:00+00:00",
    "status": "complete",
    "seed": 0,
    "git_commit": "abc123",
    "versions": {"python": "3.12.3", "torch": "2.9.0"},
    "spec": {"name": "quickstart", "models": [{"name": "toy/qwen3", "backend": "local", "host": None}]},
    "datasets": {"corrigibility": {"n_test": 6}},
    "resumed_at": "2026-11-30T10:05:00+00:00",
    "updated_at": "2026-11-30T10:06:00+00:00",
    "models": {"toy/qwen3": {"backend": "remote", "host": "http://ndif.example", "training": "rl"}},
    "traffic": {"toy/qwen3": {}},
    "chunk_sizes": {"logit_diff/toy/qwen3/corrigibility": 8},
    "history": [{"at": "x", "change": "created", "fields": []}],
    "seconds": 7.3,
    "error": None,
    "a_key_from_the_future": [1, 2],
}


def test_schema_1_manifest_migrates_and_round_trips(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(SCHEMA_1))
    manifest = RunDir(tmp_path).manifest()
    assert manifest.schema_version == SCHEMA_VERSION == 2
    assert manifest.status == "complete" and manifest.seed == 0 and manifest.name == "quickstart"
    assert manifest.chunk_sizes == {"logit_diff/toy/qwen3/corrigibility": 8}
    assert manifest.where("toy/qwen3") == ("remote", "http://ndif.example")
    assert manifest.extra == {"a_key_from_the_future": [1, 2]}
    written = manifest.to_json()
    assert written == {**SCHEMA_1, "schema_version": 2}  # every key kept, nothing invented
    assert Manifest.from_json(written) == manifest
    assert manifest.get("traffic") == {"toy/qwen3": {}} and manifest["seed"] == 0


@pytest.mark.parametrize("text", ["", '{"spec": ', "[1, 2]", '{"spec": "x"}', '{"schema_version": 99, "spec": {}}'])
def test_damaged_manifest_is_one_line_naming_it(tmp_path, text):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(RunDamaged) as caught:
        RunDir(tmp_path).manifest()
    line = str(caught.value)
    assert "\n" not in line and str(tmp_path / "manifest.json") in line and "rerun" in line


def test_vector_file_round_trip_and_damage(tmp_path):
    from remote_steer.engines.extraction import SteeringVectors
    from remote_steer.vectors import SteeringVector

    vectors = torch.randn(4, 8)
    residual = torch.rand(4) + 1
    path = tmp_path / "v.safetensors"
    meta = vector_metadata(vectors, model="toy/qwen3", revision="r", concept="c", n_pairs=5, residual_norms=residual)
    write_vectors(path, vectors, meta)
    tensor, read = read_vectors(path)
    assert torch.equal(tensor, vectors) and read["pairs"] == "5" and read["dataset"] == "c"
    both = SteeringVectors.load(path), SteeringVector.load(path)  # one format, both classes
    assert torch.equal(both[0].vectors, both[1].vectors) and both[0].n_pairs == both[1].n_pairs == 5
    assert torch.allclose(both[0].residual_norms, residual, atol=1e-5)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(RunDamaged, match=r"v\.safetensors: damaged vector file .*delete it and rerun"):
        SteeringVector.load(path)


def test_journal_damaged_entry_is_set_aside(tmp_path):
    path = journal.job_path(tmp_path, "sweep/toy/qwen3/c/items-00000")
    empty = journal.empty_entry("k", "sweep", "toy/qwen3", "http://h")
    journal.write_job(path, {**empty, "attempts": [{"job_id": "j1", "state": "completed"}]})
    assert journal.job_ids(tmp_path, "sweep/toy/qwen3/c/items-00000") == ["j1"]
    path.write_text('{"attempts": [')
    assert journal.read_job(path, empty) == empty
    assert not path.exists() and path.with_name(path.name + ".damaged").exists()
    path.write_text(json.dumps({"job_id": "old"}))  # version 1
    assert journal.read_job(path, empty)["attempts"] == [{"job_id": "old", "state": "submitted"}]


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    run = RunDir(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        holder = {"pid": sleeper.pid, "host": socket.gethostname(), "started": None, "command": "remote-steer run"}
        run.lock_path.write_text(json.dumps(holder))
        with pytest.raises(RunLocked, match=rf"being written by process {sleeper.pid} on "):
            run.lock().acquire()
        assert run.writer() is not None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run.writer() is None  # killed: the lock it left is stale
    with run.lock():
        assert json.loads(run.lock_path.read_text())["pid"] == os.getpid()
    assert not run.lock_path.exists()


def test_table_rebuilt_from_parts_when_missing_or_damaged(tmp_path):
    run = RunDir(tmp_path)
    frame = pd.DataFrame({"model": ["m", "m"], "dataset": ["d", "d"], "layer": [1, 2], "strength": [1.0, -1.0]})
    run.write_part("logit_diff", "m", "d", 0, frame)
    run.write_part("logit_diff", "m", "d", 2, frame)
    notes: list[str] = []
    rebuilt = run.table("logit_diff", note=notes.append)
    assert len(rebuilt) == 4 and (rebuilt["backend"] == "unrecorded").all()
    assert "missing; rebuilt" in notes[0]
    run.results_path("logit_diff").write_bytes(b"PAR1 not really")
    assert len(run.table("logit_diff", note=notes.append)) == 4 and "damaged" in notes[1]
    bad = run.part_path("logit_diff", "m", "d", 2)
    bad.write_bytes(bad.read_bytes()[:10])
    moved = run.set_aside_damaged("logit_diff", notes.append)
    assert [p.name for p in moved] == ["items-00002.parquet.damaged"] and "set aside" in notes[-1]
    assert len(run.read_parts("logit_diff")) == 2
