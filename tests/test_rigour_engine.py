"""Rigour machinery on the toy model against independent computations: residual norms
(plain forward hooks), weighted (bootstrap / shuffled-label) vectors from per-item
differences, and many vector sets in one sweep request against one run per vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_items

from remote_steer.data.prompts import encode_items
from remote_steer.engines.extraction import extract_caa, extract_caa_weighted
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast, extract_caa_fast_weighted
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.remote.backend import Backend

ATOL = 1e-4


@pytest.fixture(scope="module")
def items(dense_toy):
    return encode_items(dense_toy.tokenizer, make_items(5, seed=21))


def hook_residual_norms(model, items, positions):
    """Mean L2 norm of each decoder layer's output over the steered prompt positions, one
    unpadded prompt at a time through plain PyTorch forward hooks."""
    hf = model.nn._module
    sums, count = torch.zeros(model.n_layers), 0
    for item in items:
        outputs = {}
        hooks = [
            layer.register_forward_hook(
                lambda _m, _i, out, k=k, outputs=outputs: outputs.__setitem__(
                    k, out[0] if isinstance(out, tuple) else out
                )
            )
            for k, layer in enumerate(hf.model.layers)
        ]
        try:
            with torch.no_grad():
                hf(torch.tensor([item.prompt_ids]))
        finally:
            for hook in hooks:
                hook.remove()
        start = item.steer_start(positions)
        for k in range(model.n_layers):
            sums[k] += outputs[k][0, start:].norm(dim=-1).sum()
        count += len(item.prompt_ids) - start
    return sums / count


@pytest.mark.parametrize("positions", ["assistant", "all"])
def test_residual_norms_equal_forward_hooks(dense_toy, items, positions):
    expected = hook_residual_norms(dense_toy, items, positions)
    fast = extract_caa_fast(dense_toy, items, concept="c", batch_size=3, backend=Backend(), positions=positions)
    plain = extract_caa(dense_toy, items, concept="c", batch_size=3, backend=Backend(), positions=positions)
    torch.testing.assert_close(fast.residual_norms, expected, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(plain.residual_norms, expected, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(fast.vectors, plain.vectors, atol=ATOL, rtol=1e-4)
    # residual units: each layer's vector rescaled to that layer's residual norm
    torch.testing.assert_close(fast.scaled("residual").norm(dim=-1), expected, atol=1e-3, rtol=1e-3)


def test_weighted_vectors_equal_weighted_per_item_differences(dense_toy, items):
    per_item = torch.stack(
        [extract_caa_fast(dense_toy, [it], concept="c", batch_size=1, backend=Backend()).vectors for it in items]
    )  # d_i: [items, layers, hidden]
    weights = torch.tensor([[2.0, 0.0, 1.0, 1.0, 1.0], [1.0, -1.0, -1.0, 1.0, 1.0]])
    expected = torch.einsum("vi,ilh->vlh", weights, per_item) / len(items)
    for extract in (extract_caa_fast_weighted, extract_caa_weighted):
        vectors, extra = extract(dense_toy, items, concept="c", batch_size=2, backend=Backend(), weights=weights)
        torch.testing.assert_close(extra, expected, atol=ATOL, rtol=1e-4)
        torch.testing.assert_close(vectors.vectors, per_item.mean(0), atol=ATOL, rtol=1e-4)
    remote, remote_extra = extract_caa_fast_weighted(
        dense_toy, items, concept="c", batch_size=2, backend=Backend("simulated-remote"), weights=weights
    )
    torch.testing.assert_close(remote_extra, expected, atol=ATOL, rtol=1e-4)


def test_many_vector_sets_in_one_request_equal_one_run_each(dense_toy, items):
    generator = torch.Generator().manual_seed(5)
    sets = torch.randn(3, dense_toy.n_layers, dense_toy.hidden_size, generator=generator) * 2.0
    configs = [SteerConfig(4, 1.0), SteerConfig(4, -2.0), SteerConfig(9, 0.0), SteerConfig(11, 1.5)]
    engine = FastLogitDiffEngine(dense_toy, Backend(), batch_rows=10)
    baseline, steered = engine.run_vectors(items, sets, configs)
    assert steered.shape == (len(items), 3, len(configs))
    for v in range(3):
        one = FastLogitDiffEngine(dense_toy, Backend(), batch_rows=64).run(items, sets[v], configs)
        np.testing.assert_allclose(steered[:, v], one.steered, atol=ATOL, rtol=0)
        np.testing.assert_allclose(baseline, one.baseline, atol=ATOL, rtol=0)
    assert np.abs(steered[:, 0] - steered[:, 1]).max() > 1e-3  # the sets really differ


def residual_scaled_copy(c: float, dst):
    """The dense toy with its residual stream exactly c× larger and the same function:
    embeddings and every layer's output projections (attention o_proj, MLP down_proj)
    times c; every sublayer reads through an RMSNorm and so does the head, so the logits
    do not change (the head is untied and kept)."""
    import shutil

    from transformers import AutoModelForCausalLM

    from remote_steer.models.toy import ensure_toy

    src = ensure_toy("toy/qwen3")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    head = model.lm_head.weight.detach().clone()
    model.config.tie_word_embeddings = False
    with torch.no_grad():
        model.model.embed_tokens.weight = torch.nn.Parameter(model.model.embed_tokens.weight * c)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(c)
            layer.mlp.down_proj.weight.mul_(c)
    model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(dst)
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", "config.json")) or "token" in f.name:
            shutil.copy(f, dst / f.name)
    return dst


def test_residual_units_make_strengths_mean_the_same_across_residual_scales(dense_toy, tmp_path):
    """Two toys, one with an 8× larger residual stream (same function). A fixed planted
    direction (the answer letters' readout direction) added at strength s: in raw units
    its effect differs by about the scale ratio; in residual units it is the same."""
    from remote_steer.engines.extraction import SteeringVectors
    from remote_steer.models.loading import load_model, resolve

    big = load_model(resolve(str(residual_scaled_copy(8.0, tmp_path / "toy-x8"))), dtype="float32")
    items = encode_items(dense_toy.tokenizer, make_items(6, seed=4))
    items = [it for it in items if it.matching_letter == "A"]  # one letter: a letter direction moves the mean
    head = dense_toy.nn._module.lm_head.weight.detach()
    readout = head[items[0].matching_token] - head[items[0].other_token]
    planted = (readout / readout.norm()).repeat(dense_toy.n_layers, 1)  # norm 1 at every layer
    configs = [SteerConfig(6, 1.0), SteerConfig(10, 1.0)]
    effects, norms = {}, {}
    for name, model in (("x1", dense_toy), ("x8", big)):
        extracted = extract_caa_fast(model, items, concept="c", batch_size=3, backend=Backend())
        norms[name] = extracted.residual_norms
        vectors = SteeringVectors(planted, 1, model.name, model.revision, "c", extracted.residual_norms)
        engine = FastLogitDiffEngine(model, Backend())
        for unit, strength in (("raw", 1.0), ("residual", 0.5)):
            sweep = engine.run(items, vectors.scaled(unit) * strength, configs)
            effects[name, unit] = sweep.steered.mean(0) - sweep.baseline.mean()
            effects[name, "baseline"] = sweep.baseline
    # the residual norm is read right: exactly 8× (RMSNorm's epsilon aside), same baseline
    torch.testing.assert_close(norms["x8"], 8 * norms["x1"], rtol=1e-3, atol=0)
    np.testing.assert_allclose(effects["x8", "baseline"], effects["x1", "baseline"], atol=1e-3)
    # residual units: the same effect on both; raw units: the 8× model barely moves
    np.testing.assert_allclose(effects["x8", "residual"], effects["x1", "residual"], rtol=0.02, atol=1e-3)
    assert np.all(np.abs(effects["x1", "residual"]) > 0.05)
    ratio = np.abs(effects["x1", "raw"]) / np.abs(effects["x8", "raw"])
    assert np.all(ratio > 3), ratio


@pytest.mark.slow  # a whole run with controls (~1 min on 2 cores); the parts are covered above and in test_rigour.py
def test_run_with_rigour_fields_end_to_end(tmp_path):
    """Per-model overrides, residual units, controls and bootstrap vectors and the norms
    table through ``run_experiment``; polarity flipped by the spec."""
    import json as _json

    import pandas as pd
    from safetensors import safe_open

    from remote_steer.run.runner import run_experiment
    from remote_steer.run.spec import parse_spec

    text = f"""
name = "rig"
output_dir = "{tmp_path}"
[data]
concepts = ["corrigibility"]
max_items = 8
[[models]]
name = "toy/qwen3"
dtype = "float32"
layers = [10, 11]
strengths = [1.5]
training = "rl"
display_name = "toy A"
[evaluation]
strength_unit = "residual"
[controls]
random = 2
shuffled = 1
bootstrap = 1
"""
    outcome = run_experiment(parse_spec(text, "rig.toml"))
    results = outcome.results
    assert set(results["model"]) == {"toy A"} and set(results["training"]) == {"rl"}
    assert sorted(results["layer"].unique()) == [10, 11] and set(results["strength"]) == {1.5}
    assert set(results["strength_unit"]) == {"residual"}
    assert results["layer_fraction"].max() == 1.0  # depth (l + 1) / L: the last layer is 1
    controls = pd.read_parquet(outcome.run_dir / "results" / "controls.parquet")
    n_items = results["item_id"].nunique()
    assert len(controls) == n_items * 4 * 2
    assert controls.groupby("kind")["vector"].nunique().to_dict() == {"bootstrap": 1, "random": 2, "shuffled": 1}
    # the controls' baseline is the sweep's (same items, same unsteered pass)
    merged = controls.merge(results, on=["item_id", "layer", "strength"], suffixes=("", "_real"))
    np.testing.assert_allclose(merged["baseline_logit_diff"], merged["baseline_logit_diff_real"], atol=1e-4)
    norms = pd.read_parquet(outcome.run_dir / "results" / "norms.parquet")
    assert len(norms) == 12 and (norms["residual_norm"] > 0).all()
    with safe_open(str(outcome.run_dir / "vectors" / "toy A" / "corrigibility.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert len(_json.loads(meta["residual_norms"])) == 12
    np.testing.assert_allclose(_json.loads(meta["residual_norms"]), norms["residual_norm"], rtol=1e-5)


def test_flip_reverses_the_polarity_and_overrides_reach_the_plan(tmp_path):
    from remote_steer.run.runner import prepare
    from remote_steer.run.spec import parse_spec

    text = """
name = "flip"
[data]
concepts = ["corrigibility"]
max_items = 8
[[models]]
name = "toy/qwen3"
layers = [10, 11]
training = "rl"
display_name = "toy A"
"""
    plan = prepare(parse_spec(text, "flip.toml"))
    assert plan.models[0].sweep_layers == [10, 11] and plan.models[0].training == "rl"
    plain = plan.splits["corrigibility"]
    flipped = prepare(
        parse_spec(text.replace("max_items = 8", 'max_items = 8\nflip = ["corrigibility"]'), "flip.toml")
    ).splits["corrigibility"]
    by_id = {it.item_id: it for it in plain.test}
    assert set(by_id) == {it.item_id for it in flipped.test}
    for item in flipped.test:
        assert item.matching_choice == by_id[item.item_id].not_matching_choice
