"""Gated and missing repos on the Hugging Face hub (issue 27): one line naming the repo,
that it is gated (or missing), and how to get access; no traceback, nothing written.

The hub is mocked (no network): ``get_hf_file_metadata`` and ``AutoTokenizer`` raise
what huggingface_hub and transformers raise for a gated repo, a missing one, and an
unreachable hub.
"""

from __future__ import annotations

import httpx
import huggingface_hub
import pytest
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.errors import ModelError
from remote_steer.models.loading import load_config, load_tokenizer, resolve

REPO = "meta-llama/Llama-3.1-8B-Instruct"


def _hub_error(kind: str) -> Exception:
    import httpx2  # huggingface_hub's own HTTP client

    url = f"https://huggingface.co/{REPO}/resolve/main/config.json"
    response = httpx2.Response(401 if kind == "gated" else 404, request=httpx2.Request("GET", url))
    if kind == "gated":
        return GatedRepoError(f"401 Client Error. Cannot access gated repo for url {url}.", response=response)
    if kind == "missing":
        return RepositoryNotFoundError(f"404 Client Error. Repository Not Found for url: {url}.", response=response)
    return httpx.ConnectError("[Errno -3] Temporary failure in name resolution")


EXPECTED = {
    "gated": f"{REPO} is gated on the Hugging Face hub: accept its licence at https://huggingface.co/{REPO}, "
    "then log in with `hf auth login` or set HF_TOKEN",
    "missing": f"the Hugging Face hub has no repo {REPO} it will show you",
    "offline": "the Hugging Face hub is unreachable",
}


@pytest.fixture
def hub(monkeypatch):
    """The hub as ``kind`` says: nothing cached, every metadata call answered with the error."""
    state = {"kind": "gated"}

    def metadata(*args, **kwargs):
        raise _hub_error(state["kind"])

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", metadata)
    monkeypatch.setattr("huggingface_hub.constants.is_offline_mode", lambda: False)
    return state


@pytest.mark.parametrize("kind", ["gated", "missing", "offline"])
def test_config_says_gated_missing_or_offline_in_one_line(hub, kind):
    hub["kind"] = kind
    with pytest.raises(ModelError) as raised:
        load_config(resolve("Llama-3.1-8B-Instruct"))
    message = str(raised.value)
    assert EXPECTED[kind] in message and "\n" not in message and "Traceback" not in message
    if kind != "offline":
        assert "HF_TOKEN" in message


def test_tokenizer_wrapped_by_transformers_still_says_gated(monkeypatch):
    """transformers re-raises the hub's GatedRepoError as an OSError with its own text."""
    from transformers import AutoTokenizer

    def gated(*args, **kwargs):
        try:
            raise _hub_error("gated")
        except GatedRepoError as error:
            raise OSError(f"You are trying to access a gated repo.\nMake sure to have access to {REPO}.") from error

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", gated)
    with pytest.raises(ModelError) as raised:
        load_tokenizer(resolve("Llama-3.1-8B-Instruct"))
    assert EXPECTED["gated"] in str(raised.value) and "\n" not in str(raised.value)


def test_run_on_a_gated_model_is_one_line_and_writes_nothing(tmp_path, hub):
    spec = tmp_path / "gated.toml"
    spec.write_text(
        f'name = "gated"\noutput_dir = "{tmp_path / "out"}"\n[data]\nconcepts = ["corrigibility"]\nmax_items = 8\n'
        '[[models]]\nname = "Llama-3.1-8B-Instruct"\nbackend = "local"\ndevice = "cpu"\n'
        "[evaluation]\nlayers = [4]\nstrengths = [-1.0, 1.0]\n"
    )
    result = CliRunner().invoke(app, ["run", str(spec)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and EXPECTED["gated"] in errors[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
