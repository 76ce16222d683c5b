"""The sweep, its control vectors and the letter control in one request per chunk
(issue 18, real-small speed): the same numbers as the separate passes they replace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_items

from remote_steer.data.prompts import encode_items
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast, extract_caa_fast_weighted
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.remote.backend import Backend
from remote_steer.run.letter_control import as_letters, letter_gap_shift

ATOL = 1e-4


@pytest.fixture(scope="module")
def items(dense_toy):
    return encode_items(dense_toy.tokenizer, make_items(6, seed=33))


def test_letter_direction_is_one_more_extraction_weight(dense_toy, items):
    """Answering A minus answering B = ± the CAA difference, + where A matches."""
    assert {it.matching_letter for it in items} == {"A", "B"}
    old = extract_caa_fast(dense_toy, [as_letters(it) for it in items], concept="c", batch_size=4, backend=Backend())
    signs = torch.tensor([[1.0 if it.matching_letter == "A" else -1.0 for it in items]])
    _, extra = extract_caa_fast_weighted(dense_toy, items, concept="c", batch_size=4, backend=Backend(), weights=signs)
    scale = old.vectors.abs().max()
    np.testing.assert_allclose(extra[0].numpy(), old.vectors.numpy(), atol=1e-4 * float(scale), rtol=0)


def test_letter_shift_from_behaviour_diffs_equals_the_letter_items(dense_toy, items):
    """The letter gap read from the behaviour logit diffs (sign-flipped where B matches), in
    a shared request with only the strongest strengths computed, equals sweeping the
    as_letters items on their own; the pairs left out are NaN."""
    generator = torch.Generator().manual_seed(8)
    direction = torch.randn(dense_toy.n_layers, dense_toy.hidden_size, generator=generator)
    real = torch.randn(dense_toy.n_layers, dense_toy.hidden_size, generator=generator)
    configs = [SteerConfig(layer, s) for layer in (4, 9) for s in (-2.0, -1.0, 1.0, 2.0)]
    strongest = [c for c, config in enumerate(configs) if abs(config.strength) == 2.0]
    only = [[True] * len(configs), [c in strongest for c in range(len(configs))]]
    engine = FastLogitDiffEngine(dense_toy, Backend(), batch_rows=16)
    baseline, steered = engine.run_vectors(items, torch.stack([real, direction]), configs, only=only)
    assert np.isnan(steered[:, 1, [c for c in range(len(configs)) if c not in strongest]]).all()
    joint = letter_gap_shift(items, baseline, steered[:, 1, strongest]).numpy()
    alone = engine.run([as_letters(it) for it in items], direction, [configs[c] for c in strongest])
    expected = (alone.steered - alone.baseline[:, None]).mean(0)
    np.testing.assert_allclose(joint, expected, atol=ATOL * max(1.0, np.abs(expected).max()), rtol=0)
    # and the real vector's rows are what a run of it alone gives
    np.testing.assert_allclose(steered[:, 0], engine.run(items, real, configs).steered, atol=ATOL, rtol=0)


SPEC = """
name = "joint"
output_dir = "{out}"
[data]
concepts = ["corrigibility"]
max_items = 10
[[models]]
name = "{model}"
dtype = "float32"
[evaluation]
layers = [5, 9]
strengths = [-1.0, 1.0]
chunk_items = 3
[controls]
random = 2
shuffled = 1
"""


def test_joint_run_equals_separate_stages(tmp_path, monkeypatch):
    """A run whose chunks carry the controls and the letter control writes the same sweep,
    controls and letter-control tables as one with separate stages (and its own letter
    extraction and sweep); resumed it computes nothing, extended it still extends."""
    import remote_steer.run.runner as runner_module
    from remote_steer.models.toy import ensure_toy
    from remote_steer.run.runner import run_experiment
    from remote_steer.run.spec import parse_spec

    # the toy's checkpoint by its path: not a registry toy, so the letter control runs too
    text = SPEC.replace("{model}", str(ensure_toy("toy/qwen3")))
    joint = run_experiment(parse_spec(text.format(out=tmp_path / "a"), "j.toml"))
    monkeypatch.setattr(runner_module, "_joint_pass", lambda *args: None)
    separate = run_experiment(parse_spec(text.format(out=tmp_path / "b"), "j.toml"))
    assert joint.skipped_parts == 0 and joint.computed_parts == 2  # two chunks, each one request for all
    assert separate.computed_parts == 4  # two chunks × (sweep, controls)
    la, lb = (
        pd.read_parquet(o.run_dir / "results" / "letter_control.parquet").sort_values(["layer", "strength"])
        for o in (joint, separate)
    )
    assert len(la) == len(lb) == 2 * 2  # two layers × the strongest ± strength
    scale = max(1.0, float(lb["letter_control_shift"].abs().max()))
    np.testing.assert_allclose(la["letter_control_shift"], lb["letter_control_shift"], atol=ATOL * scale, rtol=0)
    np.testing.assert_allclose(la["control_norm"], lb["control_norm"], rtol=1e-5)
    key = ["item_id", "layer", "strength"]
    a, b = (o.results.sort_values(key).reset_index(drop=True) for o in (joint, separate))
    np.testing.assert_allclose(a["logit_diff"], b["logit_diff"], atol=ATOL, rtol=0)
    key += ["kind", "vector"]
    ca, cb = (
        pd.read_parquet(o.run_dir / "results" / "controls.parquet").sort_values(key).reset_index(drop=True)
        for o in (joint, separate)
    )
    assert len(ca) == len(cb) == a["item_id"].nunique() * 3 * 4
    np.testing.assert_allclose(ca["logit_diff"], cb["logit_diff"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(ca["baseline_logit_diff"], cb["baseline_logit_diff"], atol=ATOL, rtol=0)
    # resuming the joint run computes nothing, and a later extension still works
    again = run_experiment(parse_spec(text.format(out=tmp_path / "a"), "j.toml"))
    assert again.computed_parts == 0
    wider = text.replace("strengths = [-1.0, 1.0]", "strengths = [-1.0, 1.0, 2.0]")
    extended = run_experiment(parse_spec(wider.format(out=tmp_path / "a"), "j.toml"))
    controls = pd.read_parquet(extended.run_dir / "results" / "controls.parquet")
    assert set(controls["strength"]) == {-1.0, 1.0, 2.0} and len(controls) == len(ca) * 3 // 2
