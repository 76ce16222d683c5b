"""Provenance per number (issue 24): nothing is relabelled, a copy on another backend
is labelled as computed, mixed backends are said, and generate uses the recorded host."""

from __future__ import annotations

import json

import pandas as pd
from fault_harness import TINY
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.rundir import RunDir

runner = CliRunner()


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_another_backend_over_a_run_relabels_nothing_and_a_named_copy_is_labelled(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY.format(out=tmp_path))
    assert runner.invoke(app, ["run", str(spec), "--quiet"]).exit_code == 0
    local = RunDir(tmp_path / "tiny")
    before = _files(local.root)

    result = runner.invoke(app, ["run", str(spec), "--quiet", "--backend", "simulated-remote"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "computed on local, not simulated-remote" in line and "--name tiny-simulated-remote" in line
    assert _files(local.root) == before  # nothing computed, nothing relabelled, no lock left

    copy = ["run", str(spec), "--quiet", "--backend", "simulated-remote", "--name", "tiny-simulated-remote"]
    assert runner.invoke(app, copy).exit_code == 0
    remote = RunDir(tmp_path / "tiny-simulated-remote").table("logit_diff")
    assert (remote["backend"] == "simulated-remote").all()
    assert (local.table("logit_diff")["backend"] == "local").all()
    key = ["item_id", "layer", "strength"]
    both = local.table("logit_diff").merge(remote, on=key, suffixes=("", "_remote"))
    assert len(both) == len(remote)  # the same numbers, each labelled where it was computed
    assert (both["logit_diff"] - both["logit_diff_remote"]).abs().max() <= 1e-4 * both["logit_diff"].abs().max()


def test_mixed_backends_are_said():
    from remote_steer.report.base import RunInfo, mixed_note
    from remote_steer.run.runner import mixed_backends

    rows = pd.DataFrame(
        {
            "model": ["a", "a", "b"],
            "backend": ["local", "local", "remote"],
            "host": ["", "", "http://h"],
        }
    )
    assert mixed_backends(rows) == "This run mixes backends (a: local; b: remote (http://h))."
    assert mixed_backends(rows[rows["model"] == "a"]) == ""
    info = RunInfo(".", "r", "c", "complete", "", 0, ["a", "b"], ["d"], 3, 0, {"a": ["local"], "b": ["remote (h)"]})
    assert "mixed backends" in (mixed_note([info]) or "")


def test_generate_uses_the_recorded_backend_and_host(tmp_path):
    from remote_steer.chat import ChatSession
    from remote_steer.rundir import Manifest

    run = RunDir(tmp_path / "run")
    spec = {"name": "r", "models": [{"name": "toy/qwen3", "backend": "remote", "host": None}]}
    manifest = Manifest(spec=spec, models={"toy/qwen3": {"backend": "remote", "host": "http://127.0.0.1:9"}})
    run.write_manifest(manifest)
    import torch

    from remote_steer.rundir.vectorfile import vector_metadata, write_vectors

    vectors = torch.zeros(12, 128)
    meta = vector_metadata(vectors, model="toy/qwen3", revision="x", concept="c", n_pairs=1)
    write_vectors(run.vector_path("toy/qwen3", "c"), vectors, meta)
    manifest.spec["data"] = {"concepts": ["c"]}
    run.write_manifest(manifest)
    session = ChatSession(run.root, "toy/qwen3", "c", 3, [1.0])
    assert (session.backend.kind, session.backend.host) == ("remote", "http://127.0.0.1:9")
    told = ChatSession(run.root, "toy/qwen3", "c", 3, [1.0], host="http://127.0.0.1:10")
    assert told.backend.host == "http://127.0.0.1:10"
    assert json.loads(run.manifest_path.read_text())["schema_version"] == 2
