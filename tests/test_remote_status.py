"""How the client reads NDIF's answers, on the exact shapes ndif 0.1.2 produces.

The real server is exercised end to end in test_ndif_real.py; these pin the
classification itself, fast and without a server: ``/status`` entries (deployed
replicas without a repo id, COLD shadows of the Hugging Face cache, dead actors),
and each submission answer (401/400/403 key refused, 400 for another reason, 503
auth backend down, 503 compute reconnecting), with the key never in a message.
"""

from __future__ import annotations

import json

import httpx
import pytest
from nnsight.intervention.backends.remote import RemoteError

from remote_steer.remote import ndif
from remote_steer.remote.backend import Backend, RetryPolicy
from remote_steer.remote.status import COLD_NOTE, Hosting, parse_status

KEY = "not-a-uuid-but-secret-4711"
QWEN_KEY = (
    'nnsight.modeling.transformers:TransformersModel:{"repo_id": "toy/qwen3", "revision": null, '
    '"task": "text-generation"}'
)

# The shape of ndif 0.1.2's /status (controller.status): a RUNNING replica named
# <replica>:ModelActor:<model_key> whose entry lacks repo_id, a COLD entry for the same
# repo (its Hugging Face cache), a COLD model never deployed, and an orphan dead actor.
STATUS = {
    "deployments": {
        f"0:ModelActor:{QWEN_KEY}": {"application_state": "RUNNING", "deployment_level": "HOT"},
        "toy/qwen3": {"deployment_level": "COLD", "repo_id": "toy/qwen3"},
        "small/smollm2-135m-instruct": {"deployment_level": "COLD", "repo_id": "small/smollm2-135m-instruct"},
        "1:ModelActor:x": {"application_state": "UNHEALTHY"},
        "2:ModelActor:y": {
            "application_state": "RUNNING",
            "deployment_level": "WARM",
            "model_key": 'm:{"repo_id": "toy/qwen3-moe"}',
        },
    },
    "cluster": {"nodes": {}},
}


def test_status_running_beats_its_cold_shadow_and_cold_is_not_hosted():
    models = parse_status(STATUS)
    assert models["toy/qwen3"] == Hosting("toy/qwen3", "RUNNING")
    assert models["toy/qwen3"].hosted
    cold = models["small/smollm2-135m-instruct"]
    assert cold.cold and not cold.hosted
    assert COLD_NOTE in cold.describe()
    assert models["toy/qwen3-moe"].state == "WARM" and not models["toy/qwen3-moe"].hosted


def _client() -> ndif.NdifClient:
    fast = RetryPolicy(attempts=3, first_delay_s=0.0, max_delay_s=0.0)
    return ndif.NdifClient(Backend("remote", host="http://127.0.0.1:9", api_key=KEY, retry=fast), "t", "m", {})


def _answer(code: int, detail: str):
    """What nnsight's _post raises for an HTTP error: RemoteError caused by HTTPStatusError."""
    request = httpx.Request("POST", "http://127.0.0.1:9/request")
    response = httpx.Response(code, request=request, content=json.dumps({"detail": detail}).encode())

    def call():
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as error:
            raise RemoteError(f"Failed to send request: {detail}") from error

    return call


@pytest.mark.parametrize(
    "code,detail,kind,says",
    [
        (401, "Missing or invalid API key.", ndif.RemoteAuthError, "refused the API key (HTTP 401)"),
        (400, f"Invalid API key format: '{KEY}'. API keys must be …", ndif.RemoteAuthError, "malformed"),
        (403, "Invalid API key.", ndif.RemoteAuthError, "unknown to the server"),
        (400, "nnsight 0.5 is older than this server accepts", ndif.RemoteUnavailable, "refused the request"),
        (503, "Auth backend unavailable.", ndif.RemoteUnavailable, "auth backend is unavailable"),
        (503, "compute backend is reconnecting", ndif.RemoteUnavailable, "after 3 attempts"),
    ],
)
def test_submission_answers_are_one_redacted_line(code, detail, kind, says):
    client = _client()
    with pytest.raises(kind) as raised:
        client._retrying(_answer(code, detail), "submit a job", auth_matters=True)
    message = str(raised.value)
    assert says in message
    assert KEY not in message and "\n" not in message
    assert client.traffic.retries == (2 if code == 503 else 0)


def test_infrastructure_errors_are_recognised_and_trace_errors_are_not():
    assert ndif.infrastructure_error(
        "Replica was evicted while processing your request. Sorry for the inconvenience. Please try again later."
    )
    assert ndif.infrastructure_error(
        "Error submitting request to model deployment. Please try again later. Sorry for the inconvenience."
    )
    assert not ndif.infrastructure_error("Traceback ...\nIndexError: index 99 is out of bounds for dimension 0")
