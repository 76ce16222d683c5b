"""remote-steer export: each format reads back to the run's vectors, with the layer
numbering the consuming tool expects."""

from __future__ import annotations

import stat

import pytest
import torch
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.export import load_steering_vectors_file, read_gguf
from remote_steer.rundir import RunDir

runner = CliRunner()
N_LAYERS, HIDDEN = 12, 128


@pytest.fixture
def run_dir(tmp_path):
    """A run directory holding two vectors (as the runner writes them), no model needed."""
    root = tmp_path / "run"
    store = RunDir(root)
    spec = {"models": [{"name": "toy/qwen3"}], "data": {"concepts": ["corrigibility", "sycophancy"]}}
    store.open_run(spec, 0, {})
    generator = torch.Generator().manual_seed(0)
    for concept in ("corrigibility", "sycophancy"):
        vectors = torch.randn(N_LAYERS, HIDDEN, generator=generator)
        SteeringVectors(vectors, 20, "toy/qwen3", "toy-rev", concept).save(store.vector_path("toy/qwen3", concept))
    return root


def _saved(run_dir, concept="corrigibility"):
    return SteeringVectors.load(RunDir(run_dir).vector_path("toy/qwen3", concept)).vectors


def test_gguf_round_trip_is_a_llama_cpp_control_vector(run_dir):
    result = runner.invoke(app, ["export", str(run_dir), "--format", "gguf"])
    assert result.exit_code == 0, result.output
    path = run_dir / "export" / "gguf" / "toy--qwen3__corrigibility.gguf"
    assert str(path) in result.output and "layer 0 is left out" in result.output
    directions, meta = read_gguf(path)
    assert meta["general.architecture"] == "controlvector"
    assert meta["controlvector.model_hint"] == "qwen3"
    assert meta["controlvector.layer_count"] == N_LAYERS - 1
    # direction.L is added by llama.cpp to the output of block L: our row L, unshifted
    assert sorted(directions) == list(range(1, N_LAYERS))
    vectors = _saved(run_dir)
    for layer, tensor in directions.items():
        torch.testing.assert_close(tensor, vectors[layer])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_safetensors_round_trip_and_layer_choice(run_dir, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "st"
    result = runner.invoke(
        app,
        ["export", str(run_dir), "-f", "safetensors", "-o", str(out), "--concept", "sycophancy", "-l", "3", "-l", "7"],
    )
    assert result.exit_code == 0, result.output
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["toy--qwen3__sycophancy.safetensors"]
    with safe_open(str(files[0]), framework="pt") as handle:
        assert sorted(handle.keys()) == ["layer.3", "layer.7"]
        assert handle.metadata()["concept"] == "sycophancy" and handle.metadata()["revision"] == "toy-rev"
        for layer in (3, 7):
            torch.testing.assert_close(handle.get_tensor(f"layer.{layer}"), _saved(run_dir, "sycophancy")[layer])


def test_steering_vectors_round_trip(run_dir):
    pytest.importorskip("steering_vectors")
    result = runner.invoke(app, ["export", str(run_dir), "--format", "steering-vectors", "--concept", "corrigibility"])
    assert result.exit_code == 0, result.output
    path = run_dir / "export" / "steering-vectors" / "toy--qwen3__corrigibility.sv.safetensors"
    vector = load_steering_vectors_file(path)
    assert type(vector).__module__.startswith("steering_vectors")
    assert vector.layer_type == "decoder_block"
    assert sorted(vector.layer_activations) == list(range(N_LAYERS))
    for layer, tensor in vector.layer_activations.items():
        torch.testing.assert_close(tensor, _saved(run_dir)[layer])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--format", "onnx"], "--format 'onnx': expected one of gguf, safetensors, steering-vectors"),
        (["--format", "gguf", "--layer", "12"], "--layer 12: toy/qwen3 has decoder layers 0..11"),
        (["--format", "gguf", "--layer", "0"], "llama.cpp cannot steer layer 0"),
        (["--format", "gguf", "--model", "toy/qwen3-moe"], "--model 'toy/qwen3-moe': not in this run"),
    ],
)
def test_bad_export_requests_fail_in_one_line(run_dir, args, fragment):
    result = runner.invoke(app, ["export", str(run_dir), *args])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and fragment in message, message


def test_export_of_a_non_run_names_the_problem(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "gguf"])
    assert result.exit_code == 2 and "not a run directory" in result.stderr
