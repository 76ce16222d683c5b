"""The remote backend against the loopback NDIF server running as its own long-lived
process (tests/ndif_server.py, started once per session by conftest's ``ndif_server``).

Like NDIF as deployed, that process serves request after request (extraction, sweep,
generation; dense and MoE; several runs with different specs) without clearing
nnsight's caches; /status and /response are open and the key is checked on submission;
result URLs are signed and expire; a restart forgets every job. These tests show that
each fault ends in a named outcome. Every test here needs something NDIF's own server
(the real stack, tests/test_ndif_*real.py) cannot be made to do on demand, and the
comment above it says what; what the real stack can show (equal to local, bytes per
row, a killed client, refused keys, trace errors) is tested there, not here.
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
import pytest
import torch
from conftest import NDIF_TEST_KEY as KEY
from conftest import REPO_ROOT, make_items

from remote_steer.data.prompts import encode_items
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.errors import ModelError
from remote_steer.models.loading import load_model, resolve
from remote_steer.remote import ndif
from remote_steer.remote.backend import Backend, RetryPolicy
from remote_steer.remote.ndif import RemoteJobError, RemoteUnavailable
from remote_steer.run.runner import run_experiment
from remote_steer.run.spec import parse_spec

FAST = RetryPolicy(first_delay_s=0.05, max_delay_s=0.2, poll_interval_s=0.05)
ROW_KEY = ["model", "dataset", "item_id", "layer", "strength"]

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
layers = [{layers}]
batch_size = 32
chunk_items = {chunk}
[generation]
layers = [4]
max_new_tokens = 4
batch_size = 16
"""


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch, ndif_server):
    monkeypatch.setenv("NDIF_API_KEY", KEY)
    monkeypatch.setenv("REMOTE_STEER_LOST_JOB_GRACE_S", "120")
    defaults = RetryPolicy.__init__.__defaults__  # the last is lost_job_grace_s's factory sentinel
    monkeypatch.setattr(RetryPolicy.__init__, "__defaults__", (6, 0.05, 0.2, 0.05, 600.0) + defaults[5:])
    ndif_server.reset()
    yield
    ndif_server.reset()


def _spec_text(tmp_path, server, backend="remote", name="run", layers="4, 11", chunk=2):
    return SPEC.format(name=name, out=tmp_path, backend=backend, host=server.url, layers=layers, chunk=chunk)


def _spec(tmp_path, server, backend="remote", name="run", layers="4, 11", chunk=2, modes=None):
    spec = parse_spec(_spec_text(tmp_path, server, backend, name, layers, chunk), "remote.toml")
    if modes is not None:
        import dataclasses

        spec = dataclasses.replace(spec, evaluation=dataclasses.replace(spec.evaluation, modes=modes))
    return spec


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, ndif_server):
    out = tmp_path_factory.mktemp("local")
    return run_experiment(_spec(out, ndif_server, backend="local", modes=("logit", "generation")))


def _client_model(name):
    return load_model(resolve(name), dtype="float32", weights=False)


def _assert_equal_results(got, want):
    got = got.sort_values(ROW_KEY).reset_index(drop=True)
    want = want.sort_values(ROW_KEY).reset_index(drop=True)
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(got["logit_diff"], want["logit_diff"], atol=1e-5)
    np.testing.assert_allclose(got["baseline_logit_diff"], want["baseline_logit_diff"], atol=1e-5)


def _journal(run_dir: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((run_dir / "jobs").glob("*.json"))}


# Mock because a server that never clears nnsight's caches and keeps its websocket silent (ndif 0.1.x restores the
# caches around each request); the real-stack equivalent is
# test_ndif_client_real.py::test_default_engine_run_with_generation_equals_local.
def test_runs_of_different_specs_on_one_long_lived_server_equal_local(tmp_path, ndif_server, local_reference):
    """logit, then logit+generation, then another spec (other chunk size and layers),
    one after another on the same server process that keeps nnsight's caches, its
    websocket silent: each equals the local run, one submission per journaled job."""
    ndif_server.configure(silent_ws=True)
    before = ndif_server.submissions
    first = run_experiment(_spec(tmp_path, ndif_server))
    _assert_equal_results(first.results, local_reference.results)
    for model in ("toy--qwen3", "toy--qwen3-moe"):
        a = SteeringVectors.load(first.run_dir / "vectors" / model / "corrigibility.safetensors")
        b = SteeringVectors.load(local_reference.run_dir / "vectors" / model / "corrigibility.safetensors")
        torch.testing.assert_close(a.vectors, b.vectors, atol=1e-5, rtol=0)
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    for model in ("toy/qwen3", "toy/qwen3-moe"):  # 1 extraction + ceil(4 test items / 2) sweep requests
        traffic = manifest["traffic"][model]
        assert traffic["extraction"]["requests"] == 1 and traffic["evaluation"]["requests"] == 2
        assert traffic["evaluation"]["bytes_received"] > 0 and traffic["evaluation"]["bytes_sent"] > 0

    grown = run_experiment(_spec(tmp_path, ndif_server, name="grown", modes=("logit", "generation")))
    _assert_equal_results(grown.results, local_reference.results)
    key = ["model", "dataset", "item_id", "layer", "strength"]
    got = grown.generation.sort_values(key).reset_index(drop=True)
    want = local_reference.generation.sort_values(key).reset_index(drop=True)
    assert (
        len(got) == len(want) > 0
        and list(got["text"]) == list(want["text"])
        and list(got["letter"]) == list(want["letter"])
    )

    other = run_experiment(_spec(tmp_path, ndif_server, name="other", layers="2, 7, 9", chunk=3))
    reference = run_experiment(
        _spec(tmp_path / "local", ndif_server, backend="local", name="other", layers="2, 7, 9", chunk=3)
    )
    _assert_equal_results(other.results, reference.results)

    journaled = sum(len(e["attempts"]) for run in (first, grown, other) for e in _journal(run.run_dir).values())
    jobs = sum(len(_journal(run.run_dir)) for run in (first, grown, other))
    probes = 3 * 2  # one one-token key probe per remote model and run, never journaled
    assert ndif_server.submissions - before - probes == journaled == jobs  # one submission per journaled job


# Mock because it needs a server that keeps nnsight's caches between requests, which ndif 0.1.x does not.
def test_a_server_that_keeps_caches_breaks_unscoped_requests(ndif_server, dense_toy, monkeypatch):
    """The old failure, kept visible: two different bodies from one file, shipped under
    the file's own name, meet the first body's cached source on the server."""
    from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast

    monkeypatch.setattr(ndif, "SCOPE_SOURCE_NAMES", False)
    model = _client_model("toy/qwen3")
    backend = Backend("remote", host=ndif_server.url, api_key=KEY, retry=FAST)
    items = encode_items(model.tokenizer, make_items(3, seed=11))
    extract_caa_fast(model, items, concept="c", batch_size=3, backend=backend)
    vectors = torch.randn(model.n_layers, model.hidden_size)
    with pytest.raises(RemoteJobError, match="WithBlockNotFoundError"):
        FastLogitDiffEngine(model, backend, batch_rows=8).run(items, vectors, [SteerConfig(4, 1.0)])
    monkeypatch.setattr(ndif, "SCOPE_SOURCE_NAMES", True)  # the same request, scoped, runs
    FastLogitDiffEngine(model, backend, batch_rows=8).run(items, vectors, [SteerConfig(4, 1.0)])


def _client_env(**extra):
    env = {**os.environ, "NDIF_API_KEY": KEY, **extra}
    return env


def _submit_and_kill(spec_path: Path, run_dir: Path, server) -> None:
    """Start a client process, wait until it has journaled its first job (held in
    QUEUED by the server), and kill it with SIGKILL."""
    server.configure(hold=True)
    client = subprocess.Popen(
        [sys.executable, "-m", "remote_steer.cli", "run", str(spec_path), "--quiet"],
        cwd=REPO_ROOT,
        env=_client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    jobs = run_dir / "jobs"
    deadline = time.time() + 180
    while not list(jobs.glob("*.json")) and time.time() < deadline and client.poll() is None:
        time.sleep(0.2)
    assert list(jobs.glob("*.json")), client.communicate()[0].decode()[-2000:]
    client.send_signal(signal.SIGKILL)
    client.wait()


def _write_spec(tmp_path, server, name):
    spec_path = tmp_path / f"{name}.toml"
    spec_path.write_text(_spec_text(tmp_path, server, name=name))
    return spec_path


# Mock because a real api restart keeps its jobs (status lives in the object store); only a server that forgets them
# gives the 404.
def test_server_restart_between_submit_and_poll_resubmits_after_the_grace(
    tmp_path, ndif_server, local_reference, monkeypatch
):
    spec_path = _write_spec(tmp_path, ndif_server, "restarted")
    _submit_and_kill(spec_path, tmp_path / "restarted", ndif_server)
    lost_id = next(iter(_journal(tmp_path / "restarted").values()))["attempts"][0]["job_id"]
    ndif_server.restart()  # forgets every job: the journaled id now answers 404
    monkeypatch.setenv("REMOTE_STEER_LOST_JOB_GRACE_S", "1.5")
    started = time.monotonic()
    outcome = run_experiment(parse_spec(spec_path.read_text(), str(spec_path)))
    assert time.monotonic() - started < 120
    _assert_equal_results(outcome.results, local_reference.results)
    journal = _journal(outcome.run_dir)
    lost = [e for e in journal.values() if len(e["attempts"]) == 2]
    assert len(lost) == 1 and lost[0]["attempts"][0] == {**lost[0]["attempts"][0], "job_id": lost_id, "state": "lost"}
    assert lost[0]["attempts"][1]["state"] == "completed"
    assert ndif_server.submissions == 2 + 1 + 5  # after the restart: 2 probes, the resubmitted job, the other 5
    traffic = json.loads((outcome.run_dir / "manifest.json").read_text())["traffic"]["toy/qwen3"]["extraction"]
    assert traffic["requests"] == 2 and traffic["lost"] == 1  # both submissions counted


# Mock because NDIF's result URLs expire after an hour; the mock signs them for 2 s.
def test_expired_result_url_is_resubmitted_never_blamed_on_the_key(tmp_path, ndif_server, local_reference):
    """NDIF signs a non-blocking job's result URL once, at completion: a client that
    comes back after it expired finds the same dead URL on every poll, so it resubmits."""
    spec_path = _write_spec(tmp_path, ndif_server, "expired")
    ndif_server.configure(url_ttl_s=2.0)
    before = ndif_server.submissions
    _submit_and_kill(spec_path, tmp_path / "expired", ndif_server)
    ndif_server.configure(hold=False)
    deadline = time.time() + 60
    while ndif_server.stats()["states"].get("COMPLETED", 0) == 0 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2.5)  # the result URL signed at completion has expired
    expired_before = ndif_server.stats()["expired_downloads"]
    outcome = run_experiment(parse_spec(spec_path.read_text(), str(spec_path)))
    _assert_equal_results(outcome.results, local_reference.results)
    assert ndif_server.stats()["expired_downloads"] > expired_before
    first = next(
        e for e in _journal(outcome.run_dir).values() if e["stage"] == "extraction" and e["model"] == "toy/qwen3"
    )
    assert [a["state"] for a in first["attempts"]] == ["expired", "completed"]
    assert "expired" in first["attempts"][1]["how"] and "resubmitted" in first["attempts"][1]["how"]
    assert ndif_server.submissions - before == 4 + 7  # 2 × 2 probes, 6 jobs, 1 resubmission


# Mock because a 403 on a result URL and a server that signs it afresh are injected at will.
def test_expired_result_url_is_signed_afresh_where_the_server_does(tmp_path, ndif_server, local_reference):
    """A server that signs a fresh URL on every poll: the client fetches the fresh URL
    instead of resubmitting."""
    ndif_server.configure(resign=True, fail_downloads=[403])
    before = ndif_server.submissions
    outcome = run_experiment(_spec(tmp_path, ndif_server, name="fresh-url"))
    _assert_equal_results(outcome.results, local_reference.results)
    assert ndif_server.stats()["expired_downloads"] >= 1
    assert all(a["state"] == "completed" for e in _journal(outcome.run_dir).values() for a in e["attempts"])
    assert ndif_server.submissions - before == 2 + 6  # nothing resubmitted


# Mock because 503s on submission and dropped polls are injected at will.
def test_503_then_success_and_dropped_connection_are_retried(tmp_path, ndif_server, local_reference):
    before = ndif_server.submissions
    ndif_server.configure(fail_posts=[503, 503], drop_polls=2)
    outcome = run_experiment(_spec(tmp_path, ndif_server))
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    retries = sum(t["retries"] for stages in manifest["traffic"].values() for t in stages.values())
    assert retries >= 2  # the dropped polls (refused POSTs are retried before a job exists)
    assert ndif_server.submissions - before == 2 + 2 * (1 + 2)  # 2 probes; a refused POST is not a submission
    _assert_equal_results(outcome.results, local_reference.results)


# Mock because it needs a host that answers /status and then goes down.
def test_server_down_is_one_line_before_any_file(tmp_path, ndif_server):
    from ndif_server import free_port

    spec = parse_spec(
        SPEC.format(
            name="down", out=tmp_path, backend="remote", host=f"http://127.0.0.1:{free_port()}", layers="4", chunk=2
        ),
        "down.toml",
    )
    with pytest.raises(RemoteUnavailable, match="cannot read /status"):
        run_experiment(spec)
    assert not (tmp_path / "down").exists()


# Mock because the real stack deploys any model in its cache on the first request; the mock hides one.
def test_unhosted_model_is_refused_before_any_work(tmp_path, ndif_server):
    ndif_server.configure(hidden=["toy/qwen3-moe"])
    before = ndif_server.submissions
    with pytest.raises(ModelError, match="not served"):
        run_experiment(_spec(tmp_path, ndif_server))
    assert ndif_server.submissions == before and not (tmp_path / "run").exists()


# Mock because server-side job failures are injected at will (the error path must not show the key either);
# the real-stack runs grep for the key too.
def test_api_key_never_written_or_printed(tmp_path, ndif_server, capsys):
    from typer.testing import CliRunner

    from remote_steer.cli import app

    spec_path = _write_spec(tmp_path, ndif_server, "grep")
    result = CliRunner().invoke(app, ["run", str(spec_path)], env={"NDIF_API_KEY": KEY, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    ndif_server.configure(fail_jobs=3)  # an error path too: the two probes, then the first real job fail
    failed = CliRunner().invoke(app, ["run", str(spec_path), "--name", "grep-failed"], env={"NDIF_API_KEY": KEY})
    assert failed.exit_code == 2 and "CUDA out of memory" in failed.output
    checked = CliRunner().invoke(app, ["check-remote", "--host", ndif_server.url], env={"NDIF_API_KEY": KEY})
    assert checked.exit_code == 0, checked.output
    captured = capsys.readouterr()
    for text in (result.output, failed.output, checked.output, captured.out, captured.err):
        assert KEY not in text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 10
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
    found = ndif_server.payloads_containing(KEY)  # nor does it travel inside a request payload
    assert found["jobs"] > 0 and found["count"] == 0


# Mock because each check-remote step's failure (unreachable, unhosted, versions) is produced on demand; the real
# stack's all-ok path is in test_ndif_real.py.
def test_check_remote_reports_each_step_and_fails_in_one_line(ndif_server, monkeypatch):
    from typer.testing import CliRunner

    from remote_steer.cli import app

    ok = CliRunner().invoke(
        app, ["check-remote", "--host", ndif_server.url, "--model", "toy/qwen3-moe"], env={"NDIF_API_KEY": KEY}
    )
    assert ok.exit_code == 0, ok.output
    lines = ok.output.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok   reachable",
        "ok   model hosted",
        "ok   versions",
        "ok   key accepted",
        "ok   tiny trace",
    ]
    assert "server nnsight" in lines[2] and "round trip" in lines[4] and "bytes sent" in lines[4]
    wrong = CliRunner().invoke(app, ["check-remote", "--host", ndif_server.url], env={"NDIF_API_KEY": "nope"})
    assert wrong.exit_code == 2 and "FAIL key accepted" in wrong.output and "NDIF_API_KEY" in wrong.output
    hidden = CliRunner().invoke(
        app, ["check-remote", "--host", ndif_server.url, "--model", "toy/nothing"], env={"NDIF_API_KEY": KEY}
    )
    assert hidden.exit_code == 2 and len(hidden.output.strip().splitlines()) <= 2
    from ndif_server import free_port

    down = CliRunner().invoke(app, ["check-remote", "--host", f"http://127.0.0.1:{free_port()}"])
    assert down.exit_code == 2 and down.output.startswith("FAIL reachable")


# Mock because it is nnsight's blocking websocket path with an inline result, which the client never uses on NDIF.
def test_blocking_websocket_protocol_with_inline_result(ndif_server, dense_toy):
    """nnsight's default blocking client: /subscribe websocket, result inline."""
    from nnsight.intervention.backends.remote import RemoteBackend

    model = _client_model("toy/qwen3")
    ids = {"input_ids": torch.tensor([list(range(100, 110))])}
    backend = RemoteBackend(model.nn.to_model_key(), host=ndif_server.url, api_key=KEY)
    with model.nn.trace(ids, backend=backend):
        last = model.layers[3].output[:, -1, :5].save()
    with torch.inference_mode(), dense_toy.nn.trace(ids):
        local = dense_toy.layers[3].output[:, -1, :5].save()
    torch.testing.assert_close(last, local)


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_damaged_journal_of_a_killed_client_is_set_aside_and_the_job_sent_again(
    tmp_path, ndif_server, local_reference, damage
):
    """Issue 24: the journal of a job a killed client submitted, cut short or overwritten,
    is set aside (``*.damaged``) and the job sent again; the results are the local run's."""
    spec_path = _write_spec(tmp_path, ndif_server, "journal")
    _submit_and_kill(spec_path, tmp_path / "journal", ndif_server)
    ndif_server.configure(hold=False)
    entry = sorted((tmp_path / "journal" / "jobs").glob("*.json"))[0]
    data = entry.read_bytes()
    entry.write_bytes(data[:10] if damage == "truncate" else b"\xff" * 16 + data[16:])
    outcome = run_experiment(parse_spec(spec_path.read_text(), str(spec_path)))
    _assert_equal_results(outcome.results, local_reference.results)
    assert entry.with_name(entry.name + ".damaged").exists()
    assert [a["state"] for a in json.loads(entry.read_text())["attempts"]] == ["completed"]
    rows = outcome.results  # provenance: the host, its jobs and the server's versions (its open /env)
    assert (rows["backend"] == "remote").all() and (rows["host"] == ndif_server.url).all()
    assert (rows["job_ids"].str.len() > 0).all()
    assert all(json.loads(s)["nnsight"] for s in rows["server"])
