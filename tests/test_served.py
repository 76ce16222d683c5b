"""Served or not, before any compute (issue 27): ``run``, ``plan --check-hosts`` and
``check-remote`` read the host's open /status once per remote model and its /env once,
and say in one line when a model is not served (with the closest served names), cold
(the first request deploys it, and roughly how long that takes) or when the client's
nnsight or Python does not match the server's. Nothing is submitted and nothing written.

The host here is a fake: ``httpx.get`` answers /status and /env from a dict (NDIF's
/status shape, ndif 0.1.x); every POST fails the test. tests/test_ndif_real.py checks
the same lines against the real NDIF stack.
"""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.errors import ModelError
from remote_steer.remote import status
from remote_steer.run.runner import run_experiment
from remote_steer.run.spec import parse_spec

HOST = "http://ndif.fake"
# NDIF's list as of issue 27: dedicated models running, the pilot ones too, one on disk only.
SERVED = {
    "meta-llama/Llama-3.1-8B": "RUNNING",
    "meta-llama/Llama-3.1-70B": "RUNNING",
    "meta-llama/Llama-3.1-70B-Instruct": "RUNNING",
    "meta-llama/Llama-3.3-70B-Instruct": "RUNNING",
    "meta-llama/Llama-3.1-405B": "RUNNING",
    "allenai/Olmo-3-1025-7B": "COLD",
    "toy/qwen3": "RUNNING",
    "toy/qwen3-moe": "COLD",
}
SERVER_ENV = {"python_version": "3.11.7 (main)", "packages": {"nnsight": "0.8.1"}}


def _status_payload(served: dict[str, str]) -> dict:
    deployments = {}
    for repo, state in served.items():
        if state == "COLD":
            deployments[repo] = {"deployment_level": "COLD", "repo_id": repo}
        else:
            key = "nnsight.modeling.language.LanguageModel:" + json.dumps({"repo_id": repo})
            deployments[f"r0:ModelActor:{key}"] = {
                "application_state": state,
                "deployment_level": "HOT",
                "model_key": key,
            }
    return {"deployments": deployments, "cluster": {"nodes": {}}}


@pytest.fixture
def fake_host(monkeypatch):
    """The fake host: counts its GETs by path; a POST (a job) fails the test."""
    calls: dict[str, int] = {}
    state = {"served": dict(SERVED), "env": SERVER_ENV}

    def get(url, timeout=None, **kwargs):
        path = "/" + url.split("/", 3)[-1]
        calls[path] = calls.get(path, 0) + 1
        body = _status_payload(state["served"]) if path == "/status" else state["env"]
        return httpx.Response(200, content=json.dumps(body).encode(), request=httpx.Request("GET", url))

    def post(*args, **kwargs):
        raise AssertionError("a job was submitted")

    monkeypatch.setattr(httpx, "get", get)
    monkeypatch.setattr(httpx, "post", post)
    monkeypatch.setattr("remote_steer.run.runner.probe_key", post)
    monkeypatch.setattr("remote_steer.remote.ndif.probe_key", post)
    return calls, state


def _spec_text(tmp_path, *models: str) -> str:
    blocks = "".join(
        f'[[models]]\nname = "{m}"\nbackend = "remote"\nhost = "{HOST}"\ndtype = "float32"\n' for m in models
    )
    return (
        f'name = "served"\noutput_dir = "{tmp_path}"\n[data]\nconcepts = ["corrigibility"]\nmax_items = 8\n'
        f"{blocks}[evaluation]\nlayers = [4]\nstrengths = [-1.0, 1.0]\n"
    )


def test_closest_served_names_for_a_model_not_served():
    models = status.parse_status(_status_payload(SERVED))
    line = status.not_served_line(HOST, "meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct", models)
    assert "\n" not in line and "is not served by http://ndif.fake" in line
    closest = line.split("closest served: ")[1]
    assert closest.startswith("meta-llama/Llama-3.1-8B (RUNNING)")  # the base model, nearest by name
    assert "Llama-3.1-70B-Instruct" in closest and "toy/" not in closest
    assert status.closest_served("Qwen/Qwen3-8B", {}) == []


def test_cold_line_says_the_first_request_deploys_it_and_roughly_how_long():
    line = status.cold_line("Llama-3.1-70B-Instruct", HOST, 70.6)
    assert status.COLD_NOTE in line and "roughly 3 min for 141 GB" in line and "\n" not in line  # 141 s + 30 s
    assert "roughly 46 s for 16 GB" in status.cold_line("Llama-3.1-8B-Instruct", HOST, 8.03)
    assert "does not say how long" in status.cold_line("x/y", HOST)


def test_run_refuses_a_model_not_served_in_one_line_before_anything(tmp_path, fake_host):
    calls, state = fake_host
    spec_path = tmp_path / "served.toml"
    spec_path.write_text(_spec_text(tmp_path, "toy/qwen3", "toy/qwen3-moe"))
    del state["served"]["toy/qwen3-moe"]
    result = CliRunner().invoke(app, ["run", str(spec_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if "not served" in line]
    assert len(lines) == 1 and "closest served: toy/qwen3 (RUNNING)" in lines[0]
    assert "Traceback" not in result.output
    assert calls == {"/status": 2, "/env": 1}  # one /status per remote model, /env once for the host
    assert not (tmp_path / "served").exists()


def test_run_says_cold_and_version_skew_once_before_any_job(tmp_path, fake_host, monkeypatch):
    """A cold model: one line; a client nnsight older than the server's and another Python
    minor version: one line, before the key probe (the first job), and said once per host;
    "Checking the API key" said once for the run, not once per model."""
    from remote_steer.display import NullDisplay

    calls, state = fake_host
    state["env"] = {"python_version": "3.12.3 (main)", "packages": {"nnsight": "9.0.0"}}
    display = NullDisplay()
    probes: list[str] = []

    def probe(backend, model):
        probes.append(model.name if hasattr(model, "name") else "probe")
        assert any("older than the server's 9.0.0" in n for n in display.notes)  # said before the first job
        return 100

    monkeypatch.setattr("remote_steer.run.runner.probe_key", probe)
    spec = parse_spec(_spec_text(tmp_path, "toy/qwen3", "toy/qwen3-moe"), "served.toml")
    with pytest.raises(Exception):  # noqa: B017 - stops at the first real job: the fake host takes none
        run_experiment(spec, display=display)
    cold = [n for n in display.notes if status.COLD_NOTE in n]
    assert len(cold) == 1 and cold[0].startswith("toy/qwen3-moe on http://ndif.fake")
    skew = [n for n in display.notes if "older than the server's" in n]
    assert len(skew) == 1 and "Python 3.11" in skew[0] and "not the server's 3.12" in skew[0]
    assert sum("Checking the API key" in n for n in display.notes) == 1 and len(probes) == 2
    assert calls["/env"] == 1 and calls["/status"] == 2


def test_skew_line_only_when_it_matters():
    client = {"python": "3.11.7", "nnsight": "0.8.1"}
    assert status.skew_line(HOST, client, {"python": "3.11.2", "nnsight": "0.8.1"}) is None
    assert status.skew_line(HOST, client, {"python": "3.11.9", "nnsight": "0.8.0"}) is None  # client newer: fine
    line = status.skew_line(HOST, client, {"python": "3.11.9", "nnsight": "0.9.0"})
    assert line and "your nnsight 0.8.1 is older than the server's 0.9.0" in line and "Python" not in line.split(":")[1]


def test_plan_check_hosts_says_not_served_and_cold_in_one_line_each(tmp_path, fake_host):
    calls, state = fake_host
    spec_path = tmp_path / "plan.toml"
    spec_path.write_text(
        _spec_text(tmp_path, "Llama-3.1-8B-Instruct", "Llama-3.1-70B-Instruct", "Olmo-3-1025-7B").replace(
            'dtype = "float32"\n', ""
        )
    )
    result = CliRunner().invoke(app, ["plan", "--check-hosts", str(spec_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    plan_rows = [line for line in result.output.splitlines() if "api" not in line and "unchecked" not in line]
    hosted = {
        line.split("│")[1].strip(): line.split("│")[6].strip()
        for line in plan_rows
        if "│ remote " in line and "fast" in line
    }
    assert hosted == {"Llama-3.1-8B-Instruct": "no", "Llama-3.1-70B-Instruct": "yes", "Olmo-3-1025-7B": "cold"}
    not_served = [line for line in result.output.splitlines() if "is not served" in line]
    assert len(not_served) == 1 and "closest served: meta-llama/Llama-3.1-8B (RUNNING)" in not_served[0]
    cold = [line for line in result.output.splitlines() if status.COLD_NOTE in line]
    assert len(cold) == 1 and "roughly 45 s for 15 GB" in cold[0]
    assert calls == {"/status": 3}  # once per remote model, nothing else


@pytest.mark.parametrize(
    "model,says",
    [
        ("toy/qwen3-moe", "not loaded: the first request deploys it"),
        ("Llama-3.1-8B-Instruct", "closest served: meta-llama/Llama-3.1-8B (RUNNING)"),
    ],
)
def test_check_remote_stops_at_cold_or_not_served_in_one_line(fake_host, model, says):
    calls, state = fake_host
    result = CliRunner().invoke(app, ["check-remote", "--host", HOST, "--model", model], env={"COLUMNS": "250"})
    assert result.exit_code == 2
    failed = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and says in failed[0], result.output
    assert calls == {"/status": 1}  # read once; stopped before the version step, and before any job


def test_check_remote_stops_at_version_skew(fake_host):
    calls, state = fake_host
    state["env"] = {"python_version": "3.10.1", "packages": {"nnsight": "0.8.1"}}
    result = CliRunner().invoke(app, ["check-remote", "--host", HOST, "--model", "toy/qwen3"], env={"COLUMNS": "250"})
    assert result.exit_code == 2
    failed = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith("FAIL versions:") and "not the server's 3.10" in failed[0]
    assert calls == {"/status": 1, "/env": 1}


def test_require_hosted_raises_one_line():
    models = status.parse_status(_status_payload({"toy/qwen3": "RUNNING"}))
    with pytest.raises(ModelError) as raised:
        raise ModelError(status.not_served_line(HOST, "toy/qwen3-moe", "toy/qwen3-moe", models))
    assert "closest served: toy/qwen3 (RUNNING)" in str(raised.value)
