"""Smoke tests against NDIF's own server software (ndif 0.1.2), not a server written here.

The ``ndif_stack`` session fixture (tests/ndif_stack/) runs Redis, an S3 store, Ray with
the CPU actor, ndif's controller and api, and PostgreSQL holding one test key, in a venv
where ``remote_steer`` cannot be imported: a payload that refers to ``remote_steer``
without shipping it fails here as it would on NDIF.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import httpx
import pytest
from ndif_stack import stack as real_stack

MODELS = ("toy/qwen3", "toy/qwen3-moe", "small/smollm2-135m-instruct")


def _check_remote_cases():
    for model in MODELS:
        for engine in ("plain", "fast"):
            yield pytest.param(model, engine, id=f"{model}-{engine}")


def test_the_server_cannot_import_remote_steer(ndif_stack):
    stack = real_stack.Stack.load(real_stack.Path(ndif_stack.root))
    probe = subprocess.run(
        [str(real_stack.SERVER_PYTHON), "-c", "import remote_steer"],
        cwd=stack.dir,
        env=real_stack.server_env(stack),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode != 0 and "No module named 'remote_steer'" in probe.stderr


def test_every_model_is_deployed_and_running(ndif_stack):
    stack = real_stack.Stack.load(real_stack.Path(ndif_stack.root))
    assert set(ndif_stack.models) == set(MODELS)
    assert set(ndif_stack.models.values()) <= real_stack.running(stack)


@pytest.mark.parametrize(("model", "engine"), list(_check_remote_cases()))
def test_check_remote_passes_every_step(ndif_stack, model, engine):
    from typer.testing import CliRunner

    from remote_steer.cli import app

    result = CliRunner().invoke(
        app,
        ["check-remote", "--host", ndif_stack.host, "--model", model, "--engine", engine],
        env={**ndif_stack.client_env(), "COLUMNS": "200"},
    )
    assert ndif_stack.api_key not in result.output
    steps = [line for line in result.output.splitlines() if line.startswith(("ok  ", "FAIL"))]
    assert result.exit_code == 0 and len(steps) == 5 and all(s.startswith("ok  ") for s in steps), result.output


@pytest.mark.parametrize(
    ("key", "status"),
    [
        pytest.param(None, 401, id="missing"),
        pytest.param("not-a-key", 400, id="malformed"),
        pytest.param(str(uuid.UUID(int=1)), 403, id="unknown"),
    ],
)
def test_auth_is_on_for_submissions(ndif_stack, key, status):
    """ndif checks the key on submission (before the payload is read) against PostgreSQL."""
    headers = {"ndif-api-key": key} if key else {}
    envelope = {"model_key": ndif_stack.models["toy/qwen3"]}
    answer = httpx.post(f"{ndif_stack.host}/request", data={"data": json.dumps(envelope)}, headers=headers)
    assert answer.status_code == status, answer.text
