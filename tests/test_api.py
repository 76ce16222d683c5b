"""The Python API: a spec runs to a Run, the run directory reads back, and a
SteeringVector steers the same way as a hook and inside an nnsight trace."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import toy_spec_text

import remote_steer as rs

ROOT = Path(__file__).resolve().parents[1]

SPEC = toy_spec_text("quickstart", layers=(4, 6))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    run = rs.run_spec(SPEC.replace("{out}", str(root / "outputs")))
    assert run.path == root / "outputs" / "quickstart"
    return run.path


@pytest.fixture(scope="module")
def toy():
    return rs.load_model("toy/qwen3")


def test_import_is_light():
    code = "import sys, remote_steer; print(sorted(m for m in ('torch', 'nnsight', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_open_run_reads_tables_vectors_and_manifest(run_dir):
    run = rs.open_run(run_dir)
    assert run.status == "complete" and run.models == ["toy/qwen3"] and run.concepts == ["corrigibility"]
    assert set(run.results["layer"]) == {4, 6} and set(run.results["strength"]) == {-1.0, 1.0}
    assert list(run.summary["model"]) == ["toy/qwen3"]
    assert run.generation is None  # the logit mode only
    vector = run.vector("toy/qwen3", "corrigibility")
    from remote_steer.engines.extraction import SteeringVectors

    saved = SteeringVectors.load(run.vector_path("toy/qwen3", "corrigibility"))
    assert torch.equal(vector.vectors, saved.vectors) and vector.n_pairs == saved.n_pairs
    assert vector.vectors.shape == (12, 128)
    assert list(run.vectors()) == [("toy/qwen3", "corrigibility")]
    with pytest.raises(rs.RunNotFound, match="concepts: corrigibility"):
        run.vector("toy/qwen3", "sycophancy")
    with pytest.raises(rs.RunNotFound, match="not a run directory"):
        rs.open_run(run_dir / "vectors")


@pytest.mark.parametrize("units", ["raw", "residual"])
def test_hook_steering_equals_nnsight_steering(run_dir, toy, units):
    """Three computations of the same steered logits: the context manager (a forward
    hook), SteeringVector.add inside an nnsight trace, and the addend written out by
    hand inside the trace (independent of SteeringVector)."""
    vector = rs.open_run(run_dir).vector("toy/qwen3", "corrigibility")
    ids = toy.tokenizer(["Would you accept a shutdown?"], return_tensors="pt").input_ids
    layer, strength = 6, (4.0 if units == "raw" else 0.5)
    module = toy.nn._module
    d = vector.direction(layer)
    with torch.inference_mode():
        plain = module(ids).logits
        with vector.steer(module, layer=layer, strength=strength, units=units):
            hooked = module(ids).logits
        after = module(ids).logits  # hook removed on exit
        with toy.nn.trace(ids):
            h = toy.layers[layer].output
            toy.layers[layer].output = vector.add(h, layer, strength, units)
            traced = toy.nn.lm_head.output.save()
        with toy.nn.trace(ids):
            h = toy.layers[layer].output
            scale = h.norm(dim=-1, keepdim=True) / d.norm() if units == "residual" else 1.0
            toy.layers[layer].output = h + strength * scale * d
            by_hand = toy.nn.lm_head.output.save()
    assert (hooked - plain).abs().max() > 1e-3, "steering must change the logits"
    torch.testing.assert_close(after, plain)
    torch.testing.assert_close(hooked, traced, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hooked, by_hand, atol=1e-5, rtol=1e-5)


def test_residual_units_are_a_fraction_of_the_residual_norm():
    from remote_steer.vectors import steering_addend

    h = torch.tensor([[3.0, 4.0], [0.0, 10.0]])
    added = steering_addend(h, torch.tensor([2.0, 0.0]), 0.1, "residual")
    torch.testing.assert_close(added, torch.tensor([[0.5, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(steering_addend(h, torch.tensor([2.0, 0.0]), 0.1), torch.tensor([0.2, 0.0]))
    with pytest.raises(ValueError, match="units"):
        steering_addend(h, torch.tensor([1.0, 0.0]), 1.0, "sigma")


def _example(path: Path) -> str:
    text = path.read_text()
    match = re.search(r"<!-- example: api -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"{path}: no '<!-- example: api -->' python block"
    return match.group(1)


@pytest.mark.parametrize("doc", ["docs/api.md", "README.md"])
def test_documented_example_runs(doc, run_dir, monkeypatch, capsys):
    path = ROOT / doc
    if doc == "README.md" and "<!-- example: api -->" not in path.read_text():
        pytest.skip("README has no API example")
    monkeypatch.chdir(run_dir.parent.parent)  # where outputs/quickstart is
    # a real file: nnsight reads a trace's source from the file its code came from
    script = run_dir.parent.parent / f"example_{path.stem}.py"
    script.write_text(_example(path))
    runpy.run_path(str(script), run_name="__example__")
    out = capsys.readouterr().out
    assert "hook and nnsight agree: True" in out


def test_steering_vectors_library_steers_the_same_layer(run_dir, toy):
    """The steering-vectors export's layer numbering: that library, given our row L as
    layer_activations[L], steers exactly as our hook at layer L."""
    pytest.importorskip("steering_vectors")
    from remote_steer.export import load_steering_vectors_file, write_steering_vectors

    vector = rs.open_run(run_dir).vector("toy/qwen3", "corrigibility")
    path = run_dir.parent / "sv.safetensors"
    write_steering_vectors(vector, path, layers=[6])
    library_vector = load_steering_vectors_file(path)
    ids = toy.tokenizer(["Would you accept a shutdown?"], return_tensors="pt").input_ids
    module = toy.nn._module
    with torch.inference_mode():
        with vector.steer(module, layer=6, strength=4.0):
            ours = module(ids).logits
        with library_vector.apply(module, multiplier=4.0):
            theirs = module(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
