"""remote-steer generate: baseline and steered answers to one's own question."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.rundir import RunDir

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with a strong planted toy/qwen3 vector (no extraction needed)."""
    root = tmp_path_factory.mktemp("gen") / "run"
    store = RunDir(root)
    store.open_run(
        {"models": [{"name": "toy/qwen3", "dtype": "float32"}], "data": {"concepts": ["corrigibility"]}}, 0, {}
    )
    vectors = torch.randn(12, 128, generator=torch.Generator().manual_seed(1)) * 3
    SteeringVectors(vectors, 20, "toy/qwen3", "toy", "corrigibility").save(
        store.vector_path("toy/qwen3", "corrigibility")
    )
    return root


def test_generate_shows_baseline_and_each_strength_and_says_toys_are_noise(run_dir):
    result = runner.invoke(
        app,
        [
            "generate",
            str(run_dir),
            "-m",
            "toy/qwen3",
            "-c",
            "corrigibility",
            "-l",
            "6",
            "-s",
            "-8",
            "-s",
            "8",
            "--max-new-tokens",
            "6",
            "Would you accept a shutdown?",
        ],
        env={"COLUMNS": "80"},
    )
    assert result.exit_code == 0, result.output
    out = result.output
    for label in ("baseline (0)", "-8", "+8", "layer 6"):
        assert label in out
    assert "answers are noise" in " ".join(out.split())
    assert max(len(line) for line in out.splitlines()) <= 80


def test_steered_answer_equals_plain_pytorch_generation_under_the_hook(run_dir):
    """Independent check: the engine's steered greedy answer (positions "all") equals
    transformers' own greedy generate with the vector applied by a forward hook."""
    from remote_steer.chat import ChatSession
    from remote_steer.data.prompts import chat_text

    session = ChatSession(run_dir, "toy/qwen3", "corrigibility", 6, [0.0, 8.0], max_new_tokens=6, positions="all")
    answers = session.ask("Would you accept a shutdown?")
    assert answers.steered[0] == answers.baseline  # strength 0 is the baseline
    tokenizer, module = session.loaded.tokenizer, session.loaded.nn._module
    _, prompt = chat_text(tokenizer, "Would you accept a shutdown?")
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    kwargs = dict(
        max_new_tokens=6,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.inference_mode(), session.vector.steer(module, layer=6, strength=8.0):
        out = module.generate(ids, **kwargs)
    from remote_steer.engines.generation_plain import cut_at_stop, decode_generated, stop_token_ids

    expected = decode_generated(tokenizer, cut_at_stop(out[0, ids.shape[1] :].tolist(), stop_token_ids(session.loaded)))
    assert answers.steered[1] == expected
    assert answers.steered[1] != answers.baseline


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["-m", "toy/qwen3", "-c", "sycophancy", "-l", "6", "-s", "1", "q"], "--concept 'sycophancy': not in"),
        (
            ["-m", "toy/qwen3", "-c", "corrigibility", "-l", "12", "-s", "1", "q"],
            "--layer 12: toy/qwen3 has decoder layers 0..11",
        ),
        (["-m", "toy/qwen3", "-c", "corrigibility", "-l", "6", "-s", "1"], "give a QUESTION, or --chat"),
    ],
)
def test_bad_generate_requests_fail_in_one_line(run_dir, args, fragment):
    result = runner.invoke(app, ["generate", str(run_dir), *args])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and fragment in message, message


@pytest.mark.slow
def test_chat_loop_answers_until_an_empty_line(run_dir):
    result = runner.invoke(
        app,
        [
            "generate",
            str(run_dir),
            "-m",
            "toy/qwen3",
            "-c",
            "corrigibility",
            "-l",
            "6",
            "-s",
            "4",
            "--max-new-tokens",
            "3",
            "--chat",
        ],
        input="first question\nsecond question\n\n",
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("baseline (0)") == 2


def test_generate_through_the_remote_path_equals_local(run_dir):
    """The backend is a parameter: nnsight's remote serialization path (in-process)
    gives the same answers as local."""
    from remote_steer.chat import ChatSession

    local = ChatSession(run_dir, "toy/qwen3", "corrigibility", 6, [8.0], max_new_tokens=4)
    remote = ChatSession(run_dir, "toy/qwen3", "corrigibility", 6, [8.0], max_new_tokens=4, backend="simulated-remote")
    question = "Would you accept a shutdown?"
    a, b = local.ask(question), remote.ask(question)
    assert (a.baseline, a.steered) == (b.baseline, b.steered)
