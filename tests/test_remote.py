"""The remote backend against a loopback NDIF-protocol server running the toy models.

The server (tests/ndif_server.py) deserializes requests with nnsight exactly as NDIF
does, so these tests prove the trace bodies survive shipping, the traffic stays
small, and jobs survive the client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO_ROOT, make_items
from ndif_server import LoopbackNdif
from remote_steer.remote.backend import Backend, RetryPolicy
from remote_steer.errors import ModelError, RemoteSteerError
from remote_steer.engines.sweep import LogitDiffEngine, SteerConfig
from remote_steer.engines.extraction import SteeringVectors, extract_caa
from remote_steer.models.loading import load_model, resolve
from remote_steer.remote.ndif import RemoteAuthError, RemoteJobError
from remote_steer.data.prompts import encode_items
from remote_steer.run.runner import run_experiment
from remote_steer.run.spec import parse_spec

KEY = "ndif-test-key-5f1c2e9a7b"  # must never appear in output or files
FAST = RetryPolicy(first_delay_s=0.05, max_delay_s=0.2, poll_interval_s=0.05)

SPEC = """
name = "{name}"
output_dir = "{out}"
seed = 1
[data]
concepts = ["corrigibility"]
max_items = 8
[[models]]
name = "toy/qwen3"
dtype = "float32"
backend = "{backend}"
host = "{host}"
[[models]]
name = "toy/qwen3-moe"
dtype = "float32"
backend = "{backend}"
host = "{host}"
[evaluation]
strengths = [-1.0, 1.0]
layers = [4, 11]
batch_size = 32
chunk_items = 2
"""


@pytest.fixture(scope="module")
def server(dense_toy, moe_toy):
    ndif = LoopbackNdif({"toy/qwen3": dense_toy, "toy/qwen3-moe": moe_toy}, api_key=KEY).start()
    yield ndif
    ndif.stop()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch, server):
    monkeypatch.setenv("NDIF_API_KEY", KEY)
    monkeypatch.setattr("remote_steer.remote.backend.RetryPolicy.__init__.__defaults__", (6, 0.05, 0.2, 0.05, 600.0))
    server.fail_posts, server.fail_polls, server.drop_polls, server.fail_jobs = [], [], 0, 0
    server.hold.set()
    yield


def _spec(tmp_path, server, backend="remote", name="run"):
    return parse_spec(SPEC.format(name=name, out=tmp_path, backend=backend, host=server.url), "remote.toml")


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, server):
    out = tmp_path_factory.mktemp("local")
    return run_experiment(_spec(out, server, backend="local"))


def _client_model(name):
    return load_model(resolve(name), dtype="float32", weights=False)


def test_remote_run_equals_local_run(tmp_path, server, local_reference):
    before = server.submissions
    remote = run_experiment(_spec(tmp_path, server))
    key = ["model", "dataset", "item_id", "layer", "strength"]
    got = remote.results.sort_values(key).reset_index(drop=True)
    want = local_reference.results.sort_values(key).reset_index(drop=True)
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(got["logit_diff"], want["logit_diff"], atol=1e-5)
    np.testing.assert_allclose(got["baseline_logit_diff"], want["baseline_logit_diff"], atol=1e-5)
    for model in ("toy--qwen3", "toy--qwen3-moe"):
        a = SteeringVectors.load(remote.run_dir / "vectors" / model / "corrigibility.safetensors")
        b = SteeringVectors.load(local_reference.run_dir / "vectors" / model / "corrigibility.safetensors")
        torch.testing.assert_close(a.vectors, b.vectors, atol=1e-5, rtol=0)
    manifest = json.loads((remote.run_dir / "manifest.json").read_text())
    # request bound: one extraction request, and ceil(test items / chunk_items) sweep requests, per model
    for model in ("toy/qwen3", "toy/qwen3-moe"):
        traffic = manifest["traffic"][model]
        assert traffic["extraction"]["requests"] == 1
        assert traffic["evaluation"]["requests"] == 2  # 4 test items, 2 per chunk
        assert traffic["evaluation"]["bytes_received"] > 0 and traffic["evaluation"]["bytes_sent"] > 0
    assert server.submissions - before == 2 * (1 + 2)
    assert len(list((remote.run_dir / "jobs").glob("*.json"))) == 6


def test_bytes_returned_scale_with_rows_not_hidden_states(server, dense_toy):
    model = _client_model("toy/qwen3")
    vectors = torch.randn(model.n_layers, model.hidden_size)

    def received(n_items: int, n_configs: int, words: int) -> tuple[int, int]:
        backend = Backend("remote", host=server.url, api_key=KEY, retry=FAST)
        items = encode_items(model.tokenizer, make_items(n_items, seed=words))
        if words > 100:  # long prompts: same rows, many more tokens
            items = [it.__class__(**{**it.__dict__, "prompt_ids": it.prompt_ids[:1] * 200 + it.prompt_ids}) for it in items]
        configs = [SteerConfig(4 + c % 8, 1.0) for c in range(n_configs)]
        LogitDiffEngine(model, backend, batch_rows=64).run(items, vectors, configs)
        width = max(len(it.prompt_ids) for it in items)
        return backend.traffic["evaluation"].bytes_received, n_items * (n_configs + 1) * width

    small, _ = received(4, 2, 10)
    more_items, _ = received(16, 2, 10)
    more_configs, _ = received(4, 11, 10)
    long_prompts, tokens = received(4, 2, 500)
    rows_small, rows_items, rows_configs = 4 * 3, 16 * 3, 4 * 12
    per_row = (more_items - small) / (rows_items - rows_small)
    # linear in rows (items × configurations): same per-row cost whichever grows
    assert (more_configs - small) / (rows_configs - rows_small) == pytest.approx(per_row, rel=0.35)
    assert per_row < 16  # about one float32 per row, plus compression framing
    # independent of prompt length, and far below what hidden states would cost
    assert abs(long_prompts - small) < 64
    assert long_prompts < tokens * model.hidden_size * 4 / 1000


def test_kill_after_submission_then_rerun_resumes_the_same_jobs(tmp_path, server, local_reference):
    spec_path = tmp_path / "remote.toml"
    spec_path.write_text(SPEC.format(name="killed", out=tmp_path, backend="remote", host=server.url))
    before = server.submissions
    server.hold.clear()  # jobs stall in QUEUED, so the client is waiting when killed
    env = {**os.environ, "NDIF_API_KEY": KEY, "REMOTE_STEER_CACHE": os.environ.get("REMOTE_STEER_CACHE", "")}
    if not env["REMOTE_STEER_CACHE"]:
        env.pop("REMOTE_STEER_CACHE")
    client = subprocess.Popen(
        [sys.executable, "-m", "remote_steer.cli", "run", str(spec_path), "--quiet"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    jobs = tmp_path / "killed" / "jobs"
    deadline = time.time() + 120
    while not list(jobs.glob("*.json")) and time.time() < deadline and client.poll() is None:
        time.sleep(0.2)
    assert list(jobs.glob("*.json")), client.communicate()[0].decode()[-2000:]
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert server.submissions - before == 1  # the extraction job, submitted and journaled
    server.hold.set()

    resumed = run_experiment(parse_spec(spec_path.read_text(), str(spec_path)))
    # one submission per job: the killed client's job was picked up by id, not resubmitted
    assert server.submissions - before == 2 * (1 + 2)
    key = ["model", "dataset", "item_id", "layer", "strength"]
    got = resumed.results.sort_values(key).reset_index(drop=True)
    want = local_reference.results.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(got["logit_diff"], want["logit_diff"], atol=1e-5)


def test_server_exception_surfaces_remote_message_and_traceback(tmp_path, server):
    server.fail_jobs = 1
    with pytest.raises(RemoteJobError) as caught:
        run_experiment(_spec(tmp_path, server))
    message = str(caught.value)
    assert "CUDA out of memory" in message and "Traceback" in message and server.url in message
    # the failed job is not resumed on rerun: it is submitted again and the run completes
    outcome = run_experiment(_spec(tmp_path, server))
    assert len(outcome.results) > 0


def test_503_then_success_and_dropped_connection_are_retried(tmp_path, server, local_reference):
    before = server.submissions
    server.fail_posts = [503, 503]
    server.drop_polls = 2
    outcome = run_experiment(_spec(tmp_path, server))
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    retries = sum(t["retries"] for stages in manifest["traffic"].values() for t in stages.values())
    assert retries >= 4
    assert server.submissions - before == 2 * (1 + 2)  # a refused POST is not a submission
    key = ["model", "dataset", "item_id", "layer", "strength"]
    got = outcome.results.sort_values(key).reset_index(drop=True)
    want = local_reference.results.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(got["logit_diff"], want["logit_diff"], atol=1e-5)


def test_wrong_key_says_how_to_set_it(tmp_path, server, monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "wrong-key-0000")
    before = server.submissions
    with pytest.raises(RemoteAuthError) as caught:
        run_experiment(_spec(tmp_path, server))
    assert "NDIF_API_KEY" in str(caught.value) and "wrong-key-0000" not in str(caught.value)
    assert server.submissions == before and not (tmp_path / "run").exists()


def test_unhosted_model_is_refused_before_any_work(tmp_path, server):
    server.hosted_backup = dict(server.hosted)
    del server.hosted["toy/qwen3-moe"]
    before = server.submissions
    try:
        with pytest.raises(ModelError, match="not hosted"):
            run_experiment(_spec(tmp_path, server))
    finally:
        server.hosted.update(server.hosted_backup)
    assert server.submissions == before and not (tmp_path / "run").exists()


def test_api_key_never_written_or_printed(tmp_path, server, capsys):
    from typer.testing import CliRunner

    from remote_steer.cli import app

    spec_path = tmp_path / "remote.toml"
    spec_path.write_text(SPEC.format(name="grep", out=tmp_path, backend="remote", host=server.url))
    result = CliRunner().invoke(app, ["run", str(spec_path)], env={"NDIF_API_KEY": KEY, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    server.fail_jobs = 1  # an error path too
    failed = CliRunner().invoke(app, ["run", str(spec_path), "--name", "grep-failed"], env={"NDIF_API_KEY": KEY})
    assert failed.exit_code == 2 and "CUDA out of memory" in failed.output
    captured = capsys.readouterr()
    for text in (result.output, failed.output, captured.out, captured.err):
        assert KEY not in text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 10
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
    for job in server.jobs.values():  # nor does it travel inside a request payload
        assert KEY.encode() not in job.payload


def test_blocking_websocket_protocol_with_inline_result(server, dense_toy):
    """nnsight's default blocking client: /subscribe websocket, result inline."""
    from nnsight.intervention.backends.remote import RemoteBackend

    model = _client_model("toy/qwen3")
    ids = {"input_ids": torch.tensor([list(range(100, 110))])}
    backend = RemoteBackend(model.nn.to_model_key(), host=server.url, api_key=KEY)
    with model.nn.trace(ids, backend=backend):
        last = model.layers[3].output[:, -1, :5].save()
    with torch.inference_mode(), dense_toy.nn.trace(ids):
        local = dense_toy.layers[3].output[:, -1, :5].save()
    torch.testing.assert_close(last, local)
