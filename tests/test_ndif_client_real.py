"""The client's behaviour on NDIF's own server (ndif 0.1.2, the ``ndif_stack`` fixture).

Everything here runs against the real stack: the default (fast) engine's payloads
loaded by a server without ``remote_steer``; a run with logit and generation equal to
the local one; the model actor killed mid-run and the run finishing on its own; each
refused key as one line with exit code 2 and the key nowhere; a trace error with the
server's traceback; bytes per row, never hidden states; a killed client's rerun
polling the same jobs, with the key in no file. Faults the real stack cannot produce
on demand (forgotten jobs, expired result URLs, dropped polls) stay on the loopback
mock in test_remote.py, each saying why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ndif_stack import stack as real_stack

from remote_steer.remote.ndif import RemoteJobError
from remote_steer.run.runner import run_experiment
from remote_steer.run.spec import parse_spec

ROW_KEY = ["model", "dataset", "item_id", "layer", "strength"]
GEN_KEY = ["model", "dataset", "item_id", "layer", "strength"]

SPEC = """
name = "{name}"
output_dir = "{out}"
seed = 1
[data]
concepts = ["corrigibility"]
max_items = {items}
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
modes = {modes}
[generation]
layers = [4]
max_new_tokens = 4
batch_size = 16
"""


def _spec(out: Path, host: str, backend: str = "remote", name: str = "run", items: int = 8, generation=True):
    modes = '["logit", "generation"]' if generation else '["logit"]'
    text = SPEC.format(name=name, out=out, backend=backend, host=host, items=items, modes=modes)
    return parse_spec(text, f"{name}.toml")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, ndif_stack):
    return run_experiment(_spec(tmp_path_factory.mktemp("local"), ndif_stack.host, backend="local"))


@pytest.fixture
def keyed(monkeypatch, ndif_stack):
    monkeypatch.setenv("NDIF_API_KEY", ndif_stack.api_key)
    return ndif_stack


def _assert_equal(got, want) -> None:
    got = got.sort_values(ROW_KEY).reset_index(drop=True)
    want = want.sort_values(ROW_KEY).reset_index(drop=True)
    assert len(got) == len(want) > 0
    scale = max(1.0, float(np.abs(want["logit_diff"]).max()))
    np.testing.assert_allclose(got["logit_diff"], want["logit_diff"], atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(got["baseline_logit_diff"], want["baseline_logit_diff"], atol=1e-5 * scale, rtol=0)


def _assert_same_tokens(got, want) -> None:
    got = got.sort_values(GEN_KEY).reset_index(drop=True)
    want = want.sort_values(GEN_KEY).reset_index(drop=True)
    assert len(got) == len(want) > 0
    assert list(got["text"]) == list(want["text"])


def _attempts(run_dir: Path) -> list[dict]:
    return [a for p in sorted((run_dir / "jobs").glob("*.json")) for a in json.loads(p.read_text())["attempts"]]


def test_default_engine_run_with_generation_equals_local(tmp_path, keyed, local_run):
    """Fast extraction, fast sweep and fast generation on the real server: the numbers are
    the local run's, the generated tokens identical, one submission per job."""
    remote = run_experiment(_spec(tmp_path, keyed.host))
    _assert_equal(remote.results, local_run.results)
    _assert_same_tokens(remote.generation, local_run.generation)
    attempts = _attempts(remote.run_dir)
    assert attempts and all(a["state"] == "completed" for a in attempts)
    # where the time went, per attempt: client phases and the server's own runtime
    assert all({"serialize_s", "submit_s", "download_s"} <= set(a["client_s"]) for a in attempts)
    assert all(a.get("server", {}).get("runtime", 0) > 0 for a in attempts)
    # a stage submits every chunk's job before it waits on the first (the server runs them
    # back to back): per model × concept × stage, the last submission precedes the first result
    groups: dict[str, list[dict]] = {}
    for path in sorted((remote.run_dir / "jobs").glob("*.json")):
        entry = json.loads(path.read_text())  # key: stage/model/concept/items-NNNNN
        groups.setdefault(entry["key"].rsplit("/", 1)[0], []).extend(entry["attempts"])
    chunked = {k: v for k, v in groups.items() if len(v) > 1}
    assert chunked, groups.keys()
    for group, tries in chunked.items():
        last_submitted = max(a["submitted_unix"] for a in tries)
        first_result = min(a["submitted_unix"] + a["seconds"] for a in tries)
        assert last_submitted <= first_result, (group, tries)


def _actor_pids(stack) -> list[int]:
    procs = real_stack.stack_processes(real_stack.Stack.load(Path(stack.root)))
    return [p.pid for p in procs if real_stack._cmdline(p.pid).startswith("ray::CPUModelActor")]


def test_model_actor_killed_mid_run_is_resubmitted_and_the_run_finishes(tmp_path, keyed, local_run):
    """SIGKILL every model actor while the sweep's first job is in flight (Ray restarts
    them; NDIF ends the job ERROR 'Replica was evicted…' or 'Error submitting request to
    model deployment…'): the client resubmits the kept payload, journals it, and the same
    run finishes equal to local."""
    run_dir = tmp_path / "killed"
    killed: list[int] = []

    def kill_when_submitted() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            for path in (run_dir / "jobs").glob("*.json") if (run_dir / "jobs").is_dir() else ():
                try:
                    states = [a["state"] for a in json.loads(path.read_text())["attempts"]]
                except (OSError, ValueError, KeyError):
                    continue
                if states and states[-1] == "submitted":
                    for pid in _actor_pids(keyed):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_submitted, daemon=True)
    watcher.start()
    outcome = run_experiment(_spec(tmp_path, keyed.host, name="killed", generation=False))
    watcher.join(timeout=5)
    assert killed, "no actor was killed: the watcher never saw a job in flight"
    _assert_equal(outcome.results, local_run.results)
    states = [a["state"] for a in _attempts(outcome.run_dir)]
    assert states.count("evicted") >= 1, states
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert sum(t["evicted"] for m in manifest["traffic"].values() for t in m.values()) == states.count("evicted")


@pytest.mark.parametrize(
    "key,says",
    [
        ("not-a-uuid-secret-0815", "HTTP 400: malformed"),
        (str(uuid.UUID(int=0x5EC12E7)), "HTTP 403: unknown to the server"),
        (None, "none is set (NDIF_API_KEY is missing)"),
    ],
    ids=["malformed", "unknown", "missing"],
)
def test_refused_key_is_one_line_exit_2_and_never_shown(tmp_path, ndif_stack, key, says, monkeypatch):
    from nnsight.schema.config import CONFIG
    from typer.testing import CliRunner

    from remote_steer.cli import app

    spec_path = tmp_path / "key.toml"
    spec_path.write_text(
        SPEC.format(name="key", out=tmp_path, backend="remote", host=ndif_stack.host, items=8, modes='["logit"]')
    )
    env = {"COLUMNS": "200", "NDIF_API_KEY": key or ""}
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)  # no saved key behind the environment's
    result = CliRunner().invoke(app, ["run", str(spec_path)], env=env)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert says in result.output and "Traceback" not in result.output
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and says in errors[0], result.output
    assert not (tmp_path / "key").exists()
    if key:
        assert key not in result.output
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes(), path
    checked = CliRunner().invoke(app, ["check-remote", "--host", ndif_stack.host, "--model", "toy/qwen3"], env=env)
    assert checked.exit_code == 2 and "FAIL key accepted" in checked.output
    if key:
        assert key not in checked.output


def test_trace_error_stops_with_the_server_traceback_and_is_not_resubmitted(tmp_path, keyed):
    """An error raised by the trace code itself (an index past the sequence) is not an
    infrastructure failure: one attempt, state failed, the server's traceback in the error."""
    import nnsight
    import torch

    from remote_steer.models.loading import load_model, resolve
    from remote_steer.remote.backend import Backend

    model = load_model(resolve("toy/qwen3"), dtype="float32", weights=False)
    backend = Backend("remote", host=keyed.host, api_key=keyed.api_key, journal_dir=tmp_path / "jobs")
    request = backend.open(model, "evaluation", "broken")
    nn, layers, ids = model.nn, model.layers, {"input_ids": torch.zeros(1, 3, dtype=torch.long)}
    out = None
    with pytest.raises(RemoteJobError) as raised:
        with torch.inference_mode():
            with nn.session(**request.session_kwargs()):
                with nn.trace(ids):
                    out = nnsight.save(layers[0].output[0, 999])
            request.result(out=out)
    assert "index 999 is out of bounds" in str(raised.value) and keyed.host in str(raised.value)
    states = [a["state"] for a in _attempts(tmp_path)]
    assert states == ["failed"]


def test_bytes_returned_scale_with_rows_not_hidden_states(keyed):
    """On the real server: about one float per item × configuration comes back, whatever
    the prompt length; never hidden states or logits."""
    import torch
    from conftest import make_items

    from remote_steer.data.prompts import encode_items
    from remote_steer.engines.sweep_fast import FastLogitDiffEngine
    from remote_steer.engines.sweep_plain import SteerConfig
    from remote_steer.models.loading import load_model, resolve
    from remote_steer.remote.backend import Backend

    model = load_model(resolve("toy/qwen3"), dtype="float32", weights=False)
    vectors = torch.randn(model.n_layers, model.hidden_size)

    def received(n_items: int, n_configs: int, long: bool) -> tuple[int, int]:
        backend = Backend("remote", host=keyed.host, api_key=keyed.api_key)
        items = encode_items(model.tokenizer, make_items(n_items, seed=3))
        if long:  # same rows, many more tokens
            items = [
                it.__class__(**{**it.__dict__, "prompt_ids": it.prompt_ids[:1] * 200 + it.prompt_ids}) for it in items
            ]
        configs = [SteerConfig(4 + c % 8, 1.0) for c in range(n_configs)]
        FastLogitDiffEngine(model, backend, batch_rows=64).run(items, vectors, configs)
        width = max(len(it.prompt_ids) for it in items)
        return backend.traffic["evaluation"].bytes_received, n_items * (n_configs + 1) * width

    small, _ = received(4, 2, False)
    more_items, _ = received(16, 2, False)
    more_configs, _ = received(4, 11, False)
    long_prompts, tokens = received(4, 2, True)
    per_row = (more_items - small) / (16 * 3 - 4 * 3)
    # linear in rows (items × configurations): the same per-row cost whichever grows
    assert (more_configs - small) / (4 * 12 - 4 * 3) == pytest.approx(per_row, rel=0.35)
    assert per_row < 16  # about one float32 per row, plus framing
    # 200 more tokens per prompt change nothing but the framing (the server's response
    # varies by a few hundred bytes run to run)
    assert long_prompts < 1.35 * small
    assert long_prompts < tokens * model.hidden_size * 4 / 1000  # far below hidden states


def test_killed_client_rerun_polls_the_same_jobs_and_the_key_is_nowhere(tmp_path, keyed, local_run):
    """A client SIGKILLed after journaling its first job; the rerun picks every journaled
    job up by id (one attempt each, nothing resubmitted), equals local, and the key is in
    no output and no file."""
    spec_path = tmp_path / "killed-client.toml"
    spec_path.write_text(
        SPEC.format(name="killed-client", out=tmp_path, backend="remote", host=keyed.host, items=8, modes='["logit"]')
    )
    env = {**os.environ, **keyed.client_env(), "COLUMNS": "100"}
    client = subprocess.Popen(
        [sys.executable, "-m", "remote_steer.cli", "run", str(spec_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    jobs = tmp_path / "killed-client" / "jobs"
    deadline = time.monotonic() + 600
    while not list(jobs.glob("*.json")) and time.monotonic() < deadline and client.poll() is None:
        time.sleep(0.05)
    client.send_signal(signal.SIGKILL)
    first_output = client.communicate()[0].decode()
    first = {p.name: json.loads(p.read_text())["attempts"][0]["job_id"] for p in jobs.glob("*.json")}
    assert first, first_output[-2000:]
    rerun = subprocess.run(
        [sys.executable, "-m", "remote_steer.cli", "run", str(spec_path)], env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    for name, job_id in first.items():
        attempts = json.loads((jobs / name).read_text())["attempts"]
        assert [a["job_id"] for a in attempts] == [job_id] and attempts[0]["state"] == "completed"
    results = pd.read_parquet(tmp_path / "killed-client" / "results" / "logit_diff.parquet")
    _assert_equal(results, local_run.results)
    for text in (first_output, rerun.stdout, rerun.stderr):
        assert keyed.api_key not in text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 10
    for path in written:
        assert keyed.api_key.encode() not in path.read_bytes(), path


def test_remote_over_a_local_run_relabels_nothing_and_a_named_copy_is_remote(tmp_path, keyed, monkeypatch):
    """Issue 24: the local run, then the same spec with the remote backend over it: nothing
    is computed or relabelled, and the one line names the way to a remote copy. The copy
    made that way says backend=remote (and the host and its job ids) on every row, and
    `generate` on it goes to the host the run recorded, not the default one."""
    from remote_steer.chat import ChatSession
    from remote_steer.errors import SpecError
    from remote_steer.rundir import RunDir

    local = run_experiment(_spec(tmp_path, keyed.host, backend="local", generation=False))
    before = {p: p.read_bytes() for p in sorted(local.run_dir.rglob("*")) if p.is_file()}
    with pytest.raises(SpecError) as refused:
        run_experiment(_spec(tmp_path, keyed.host, generation=False))
    line = str(refused.value)
    assert "\n" not in line and "computed on local, not remote" in line and "--name run-remote" in line
    assert {p: p.read_bytes() for p in sorted(local.run_dir.rglob("*")) if p.is_file()} == before

    copy = run_experiment(_spec(tmp_path, keyed.host, name="run-remote", generation=False))
    rows = RunDir(copy.run_dir).table("logit_diff")
    assert (rows["backend"] == "remote").all() and (rows["host"] == keyed.host).all()
    assert (rows["job_ids"].str.len() > 0).all()
    assert all(json.loads(s)["nnsight"] not in ("", "?") for s in rows["server"])  # from the server's /env
    assert (RunDir(local.run_dir).table("logit_diff")["backend"] == "local").all()
    _assert_equal(copy.results, local.results)

    monkeypatch.delenv("NDIF_HOST", raising=False)  # the host comes from the run, not from the environment
    session = ChatSession(copy.run_dir, "toy/qwen3", "corrigibility", 4, [1.0], max_new_tokens=2)
    assert (session.backend.kind, session.backend.host) == ("remote", keyed.host)
    answers = session.ask("Would you accept being shut down?")
    assert answers is not None


def test_decodability_readout_equals_local_within_its_byte_budget(keyed):
    """On the real server: the extraction pass's decodability readout (answer rows projected
    on the remote random basis, and the logit lens) equals the local one, and what comes
    back stays within the stated budget (analysis/decodability.readout_bytes, plus the
    extraction's own [layers, hidden] sums and framing)."""
    import torch
    from conftest import make_items

    from remote_steer.analysis.decodability import readout_basis, readout_bytes
    from remote_steer.data.prompts import encode_items
    from remote_steer.engines.sweep_fast import extract_caa_fast_readout
    from remote_steer.models.loading import load_model, resolve
    from remote_steer.remote.backend import Backend

    local_model = load_model(resolve("toy/qwen3"), dtype="float32")
    remote_model = load_model(resolve("toy/qwen3"), dtype="float32", weights=False)
    items = encode_items(local_model.tokenizer, make_items(6, seed=21))
    basis = readout_basis(local_model.hidden_size, remote=True, seed=0, dims=16)
    _, _, want = extract_caa_fast_readout(local_model, items, concept="c", batch_size=4, backend=Backend(), basis=basis)
    backend = Backend("remote", host=keyed.host, api_key=keyed.api_key)
    _, _, got = extract_caa_fast_readout(remote_model, items, concept="c", batch_size=4, backend=backend, basis=basis)
    assert got is not None and want is not None
    for a, b in ((got.positive, want.positive), (got.negative, want.negative), (got.lens, want.lens)):
        torch.testing.assert_close(a, b, atol=1e-5 * max(1.0, float(b.abs().max())), rtol=0)
    n_layers, hidden = local_model.n_layers, local_model.hidden_size
    budget = readout_bytes(len(items), n_layers, 16) + 2 * n_layers * hidden * 4 + 20_000
    assert backend.traffic["extraction"].bytes_received <= budget


SIDE_EFFECTS_SPEC = """
name = "{name}"
output_dir = "{out}"
seed = 1
[data]
concepts = ["corrigibility", "self-awareness"]
max_items = 8
[[models]]
name = "toy/qwen3"
dtype = "float32"
backend = "{backend}"
host = "{host}"
[evaluation]
strengths = [-1.0, 1.0]
layers = [4, 11]
batch_size = 32
chunk_items = 4
side_effects = true
"""


def test_side_effects_matrix_on_the_server_equals_the_local_one_from_kept_passes(tmp_path, keyed):
    """The sweep's request (which, locally, keeps its prompt passes for the matrix) sends
    nothing extra to the server, and the side-effects matrix of a remote model (one request
    per concept, every prompt again) equals the local run's, made from the kept passes."""
    frames, sweeps = {}, {}
    for backend in ("local", "remote"):
        text = SIDE_EFFECTS_SPEC.format(name=backend, out=tmp_path / backend, backend=backend, host=keyed.host)
        outcome = run_experiment(parse_spec(text, f"{backend}.toml"))
        frames[backend] = pd.read_parquet(outcome.run_dir / "results" / "side_effects.parquet")
        sweeps[backend] = outcome.results
    _assert_equal(sweeps["remote"], sweeps["local"])
    local, remote = (frames[b].sort_values(["vector", "dataset"]).reset_index(drop=True) for b in ("local", "remote"))
    assert set(local["prompt_pass"]) == {"kept from the sweep"} and set(remote["prompt_pass"]) == {"run again"}
    assert set(remote["backend"]) == {"remote"} and remote["job_ids"].map(len).min() > 0
    np.testing.assert_allclose(remote["glass_delta"], local["glass_delta"], rtol=1e-4, atol=1e-5)


def test_predicted_window_on_the_server_sweeps_the_window_its_own_readout_predicts(tmp_path, keyed):
    """``layer_window = "predicted"`` on a remote model: the server's decodability readout (a
    seeded random projection) predicts each concept's layer, and the sweep holds exactly the
    window around it; its rows equal a local full sweep's at those layers."""
    from remote_steer.analysis import layer_predictor as P

    frames = {}
    for backend, window in (("local", "all"), ("remote", "predicted")):
        text = SIDE_EFFECTS_SPEC.format(name=backend, out=tmp_path / backend, backend=backend, host=keyed.host)
        text = text.replace("layers = [4, 11]", "layers = [2, 4, 6, 8, 10]")
        text = text.replace("side_effects = true", f'layer_window = "{window}"')
        frames[backend] = run_experiment(parse_spec(text, f"{backend}.toml"))
    remote = frames["remote"]
    table = pd.read_parquet(remote.run_dir / "results" / "decodability.parquet")
    assert table["probe_accuracy"].between(0, 1).all()
    for concept, curve in table.groupby("dataset"):
        layers = P.window(P.predict_layer(curve), [2, 4, 6, 8, 10], 12)
        rows = remote.results[remote.results["dataset"] == concept]
        assert sorted(rows["layer"].unique()) == layers and set(rows["backend"]) == {"remote"}
        full = frames["local"].results
        _assert_equal(rows, full[(full["dataset"] == concept) & full["layer"].isin(layers)])
    assert len(remote.results) < len(frames["local"].results)
