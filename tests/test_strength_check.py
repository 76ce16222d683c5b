"""Strength sanity (run/strength_check.py, docs/rigour.md): a strength whose added vector
swamps the residual stream is refused in one line before the sweep computes anything,
with the multiple it amounts to, equal to a hand computation from the saved norms."""

from __future__ import annotations

import dataclasses
import json
import re
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import toy_spec_text
from safetensors import safe_open
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.run import strength_check
from remote_steer.run.spec import parse_spec

runner = CliRunner()

HUGE = toy_spec_text("huge", strengths="[-1e6, 1e6]")


def _hand_multiple(vector_file, layers, strength):
    """max over layers of |s| × ‖v_l‖ / residual_l, from the file itself."""
    with safe_open(str(vector_file), framework="pt") as handle:
        vectors = handle.get_tensor("vectors").double()
        residual = json.loads(handle.metadata()["residual_norms"])
    return max(abs(strength) * float(torch.linalg.vector_norm(vectors[layer])) / residual[layer] for layer in layers)


def test_huge_strengths_are_refused_in_one_line_then_run_with_the_flag(tmp_path):
    spec = tmp_path / "huge.toml"
    spec.write_text(HUGE.replace("{out}", str(tmp_path / "out")))
    refused = runner.invoke(app, ["run", str(spec), "--quiet"])
    assert refused.exit_code == 2, refused.output
    message = refused.stderr.strip()
    assert "\n" not in message and "Traceback" not in refused.output
    found = re.fullmatch(
        r"error: .*huge\.toml:\d+: evaluation\.strengths: (-?1e\+06) × vector at layer (\d+) of toy/qwen3 "
        r"\(corrigibility\) is (\S+) × the residual norm there \(limit 10×\); "
        r"pass --allow-large-strengths to run it anyway",
        message,
    )
    assert found, message
    assert not (tmp_path / "out").exists(), "nothing computed, nothing left behind"
    assert "measured by the extraction" in strength_check.plan_note(parse_spec(spec.read_text(), str(spec)))

    allowed = runner.invoke(app, ["run", str(spec), "--quiet", "--allow-large-strengths"])
    assert allowed.exit_code == 0, allowed.output
    run_dir = tmp_path / "out" / "huge"
    assert len(pd.read_parquet(run_dir / "results" / "logit_diff.parquet")) == 3 * 2 * 2  # items × layers × strengths
    vector_file = run_dir / "vectors" / "toy--qwen3" / "corrigibility.safetensors"
    expected = _hand_multiple(vector_file, [4, 11], 1e6)
    assert float(found.group(3)) == pytest.approx(expected, rel=0.01)  # printed to three figures
    layers = [4, 11]
    per_layer = [_hand_multiple(vector_file, [layer], 1e6) for layer in layers]
    assert int(found.group(2)) == layers[per_layer.index(max(per_layer))]
    assert expected > 1e4  # the toys' vectors are ~0.03-0.1 × the residual norm
    # plan gives the residual-unit equivalent from the saved vectors: the range over the sweep layers
    note = " ".join(strength_check.plan_note(parse_spec(spec.read_text(), str(spec))).split())
    shown = re.search(r"raw strength ±1e\+06 is toy/qwen3 (\d+)–(\d+)× the residual norm", note)
    assert shown, note
    assert float(shown.group(1)) == pytest.approx(min(per_layer), abs=1)
    assert float(shown.group(2)) == pytest.approx(max(per_layer), abs=1)


def test_a_refused_strength_leaves_an_existing_run_as_it_was(tmp_path):
    spec = tmp_path / "huge.toml"
    spec.write_text(HUGE.replace("{out}", str(tmp_path / "out")).replace("[-1e6, 1e6]", "[-1.0, 1.0]"))
    assert runner.invoke(app, ["run", str(spec), "--quiet"]).exit_code == 0
    run_dir = tmp_path / "out" / "huge"
    manifest = (run_dir / "manifest.json").read_bytes()
    parts = sorted(p.relative_to(run_dir) for p in (run_dir / "parts").rglob("*"))
    spec.write_text(spec.read_text().replace("[-1.0, 1.0]", "[-1e6, -1.0, 1.0, 1e6]"))
    refused = runner.invoke(app, ["run", str(spec), "--quiet"])
    assert refused.exit_code == 2 and "limit 10×" in refused.stderr
    assert (run_dir / "manifest.json").read_bytes() == manifest  # the refused spec is not the run's
    assert sorted(p.relative_to(run_dir) for p in (run_dir / "parts").rglob("*")) == parts
    spec.write_text(spec.read_text().replace("[-1e6, -1.0, 1.0, 1e6]", "[-4.0, -1.0, 1.0, 4.0]"))
    extended = runner.invoke(app, ["run", str(spec), "--quiet"])  # the corrected spec extends the run
    assert extended.exit_code == 0, extended.output


def _fake(norms, residual, strengths=(-1.0, 1.0), layers=(0, 1), unit="raw", allow=False, modes=("logit",)):
    text = f"""
name = "fake"
[[models]]
name = "toy/qwen3"
[evaluation]
strengths = {list(strengths)}
strength_unit = "{unit}"
allow_large_strengths = {"true" if allow else "false"}
modes = {json.dumps(list(modes))}
"""
    spec = parse_spec(text, "fake.toml")
    prepared = SimpleNamespace(spec=spec.models[0], sweep_layers=list(layers), generation_layers=list(layers))
    vectors = SimpleNamespace(norms=list(norms), residual_norms=torch.tensor(residual))
    return spec, prepared, vectors


def test_the_limit_is_ten_times_the_residual_norm_at_any_steered_layer():
    # layer 1: vector 2, residual 4 -> strength 20 is 10× (allowed), 20.2 is 10.1× (refused)
    spec, prepared, vectors = _fake([1.0, 2.0], [100.0, 4.0], strengths=(-20.0, 20.0))
    strength_check.check(spec, prepared, "c", vectors)
    spec, prepared, vectors = _fake([1.0, 2.0], [100.0, 4.0], strengths=(-20.2, 20.0))
    refused = r"-20\.2 × vector at layer 1 of toy/qwen3 \(c\) is 10\.1 ×"
    with pytest.raises(strength_check.StrengthRefused, match=refused):
        strength_check.check(spec, prepared, "c", vectors)
    # a layer outside the sweep does not count
    spec, prepared, vectors = _fake([1.0, 2.0], [100.0, 4.0], strengths=(-20.2, 20.0), layers=(0,))
    strength_check.check(spec, prepared, "c", vectors)
    # the spec field lets it through, as the flag does
    spec, prepared, vectors = _fake([1.0, 2.0], [100.0, 4.0], strengths=(-20.2, 20.0), allow=True)
    strength_check.check(spec, prepared, "c", vectors)


def test_residual_units_are_their_own_multiple_and_old_vectors_pass():
    spec, prepared, vectors = _fake([1.0, 2.0], [100.0, 4.0], strengths=(-0.5, 12.0), unit="residual")
    with pytest.raises(strength_check.StrengthRefused, match=r"12 × the residual norm at layer 0 .* is 12 ×"):
        strength_check.check(spec, prepared, "c", vectors)
    spec, prepared, vectors = _fake([1.0, 2.0], [100.0, 4.0], strengths=(-1e6, 1e6))
    vectors.residual_norms = None  # saved before residual norms were measured: nothing to compare with
    strength_check.check(spec, prepared, "c", vectors)


def test_generation_strengths_are_checked_too():
    spec, prepared, vectors = _fake([1.0, 2.0], [100.0, 4.0], modes=("generation",))
    spec = dataclasses.replace(spec, generation=dataclasses.replace(spec.generation, strengths=(50.0,)))
    with pytest.raises(strength_check.StrengthRefused, match=r"generation\.strengths: 50 × vector at layer 1"):
        strength_check.check(spec, prepared, "c", vectors)


def test_residual_equivalents_caption_is_the_ratio_range_times_the_strength():
    norms = pd.DataFrame(
        {
            "model": ["a", "a", "a", "b"],
            "dataset": ["x", "x", "y", "x"],
            "layer": [3, 4, 4, 4],
            "ratio": [0.5, 0.02, 0.04, 0.1],
        }
    )
    line = strength_check.equivalents(norms, {"a": [4], "b": [4]}, 16.0)
    assert line == (
        "In residual units, raw strength ±16 is a 0.32–0.64×, b 1.6–1.6× the residual norm "
        "(range over sweep layers and concepts)."
    )
    assert strength_check.equivalents(pd.DataFrame(), {"a": [4]}, 1.0) is None
