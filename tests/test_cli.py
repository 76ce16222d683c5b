"""The command line: help on every command, and one clear line for each bad input."""

from __future__ import annotations

import pytest
from conftest import toy_spec_text
from typer.testing import CliRunner

from remote_steer.cli import app

runner = CliRunner()

GOOD = toy_spec_text("cli")


def _run(tmp_path, spec_text: str):
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text.replace("{out}", str(tmp_path / "out")))
    return runner.invoke(app, ["run", str(spec), "--quiet"]), spec


def _assert_clean_failure(result, tmp_path, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message
    assert not (tmp_path / "out").exists(), "a failed run must leave no files behind"


@pytest.mark.parametrize("command", ["run", "plan", "models", "datasets", "report"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert len(result.output.strip().splitlines()) > 3


def test_models_marks_toys_and_lists_the_family():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "220"})
    assert result.exit_code == 0
    for name in ("Qwen3-4B", "Qwen3-235B-A22B", "toy/qwen3-moe", "random-weight toy"):
        assert name in result.output


def test_datasets_lists_concepts():
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0
    assert "coordinate-other-versions" in result.output and "sycophancy" in result.output


def test_small_run_succeeds(tmp_path):
    result, _ = _run(tmp_path, GOOD)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "cli" / "results" / "logit_diff.parquet").exists()


def test_malformed_jsonl_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"question": "Q?\\n\\nChoices:\\n (A) x\\n (B) y", "answer_matching_behavior": " (A)", '
        '"answer_not_matching_behavior": " (B)"}\n{"question": oops}\n'
    )
    text = GOOD.replace(
        'concepts = ["corrigibility"]', f'concepts = ["corrigibility"]\nfiles = {{ corrigibility = ["{bad}"] }}'
    )
    result, _ = _run(tmp_path, text)
    _assert_clean_failure(result, tmp_path, f"{bad}:2:", "invalid JSON")


def test_unknown_concept(tmp_path):
    result, _ = _run(tmp_path, GOOD.replace('"corrigibility"]', '"corrigability"]'))
    _assert_clean_failure(result, tmp_path, "corrigability", "corrigibility")


@pytest.mark.parametrize("name", ["toy/qwen4", "./no/such/checkpoint"])
def test_unknown_model(tmp_path, name):
    result, _ = _run(tmp_path, GOOD.replace('"toy/qwen3"', f'"{name}"'))
    _assert_clean_failure(result, tmp_path, name)


def test_layer_outside_the_model(tmp_path):
    result, spec = _run(tmp_path, GOOD.replace("layers = [4, 11]", "layers = [4, 40]"))
    _assert_clean_failure(result, tmp_path, "evaluation.layers", "layer 40", "0..11")


def test_unknown_spec_field_names_file_line_and_suggests(tmp_path):
    result, spec = _run(tmp_path, GOOD.replace("strengths =", "strenghts ="))
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if text.startswith("strenghts"))
    _assert_clean_failure(result, tmp_path, f"{spec}:{line}:", "evaluation.strenghts", "did you mean 'strengths'")


def test_answers_that_tokenize_identically(tmp_path, monkeypatch):
    import remote_steer.data.prompts as prompts

    monkeypatch.setattr(prompts, "answer_text", lambda letter: "(X)")  # both answers the same text
    result, _ = _run(tmp_path, GOOD)
    _assert_clean_failure(result, tmp_path, "corrigible-neutral-HHH:", "tokenize identically")


def test_hub_id_offline_fails_with_a_message_not_a_trace(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result, _ = _run(tmp_path, GOOD.replace('"toy/qwen3"', '"Qwen/Qwen3-4B"'))
    _assert_clean_failure(result, tmp_path, "Qwen/Qwen3-4B", "hub", "local checkpoint directory")


def test_plan_runs_offline_and_prints_every_model(monkeypatch):
    from conftest import REPO_ROOT

    monkeypatch.setenv("NDIF_HOST", "http://127.0.0.1:9")  # nothing listens: the host check must not hang
    result = runner.invoke(app, ["plan", str(REPO_ROOT / "experiments" / "qwen3_family.toml")], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name in ("Qwen3-4B", "Qwen3-8B", "Qwen3-14B", "Qwen3-30B-A3B", "Qwen3-32B", "Qwen3-235B-A22B"):
        assert name in result.output
    assert "remote" in result.output and "unchecked" in result.output  # no network call unless asked
    checked = runner.invoke(
        app, ["plan", str(REPO_ROOT / "experiments" / "qwen3_family.toml"), "--check-hosts"], env={"COLUMNS": "250"}
    )
    assert checked.exit_code == 0 and "unknown" in checked.output  # host unreachable: said, not hidden


def test_plan_makes_no_network_call_unless_asked(monkeypatch):
    import httpx
    from conftest import REPO_ROOT

    def refuse(*args, **kwargs):
        raise AssertionError("plan made a network call")

    monkeypatch.setattr(httpx, "get", refuse)
    monkeypatch.setattr(httpx.Client, "send", refuse)
    result = runner.invoke(app, ["plan", str(REPO_ROOT / "experiments" / "qwen3_family.toml")], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert "engine" in result.output and "fast" in result.output
