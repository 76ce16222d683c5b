"""Oracle tests: nnsight extraction and steering against plain PyTorch forward hooks.

The oracle runs the underlying transformers module one unpadded prompt at a time,
with hooks on the decoder layers and no nnsight, so padding, batching, the per-row
layer routing and the in-trace reductions are all checked independently.
"""

from __future__ import annotations

import pytest
import torch
from conftest import hook_layer_outputs, hook_logit_diff, make_items

from remote_steer.data.prompts import encode_items
from remote_steer.engines.extraction import extract_caa
from remote_steer.engines.sweep_plain import LogitDiffEngine, SteerConfig
from remote_steer.remote.backend import Backend

ATOL = 1e-4


@pytest.fixture(scope="module")
def encoded_dense(dense_toy):
    return encode_items(dense_toy.tokenizer, make_items(7, seed=1))


def test_extracted_vectors_equal_mean_activation_differences(toy):
    items = encode_items(toy.tokenizer, make_items(5, seed=2))
    vectors = extract_caa(toy, items, concept="c", batch_size=3, backend=Backend())
    diffs = [
        hook_layer_outputs(toy, list(it.prompt_ids) + [it.matching_token])
        - hook_layer_outputs(toy, list(it.prompt_ids) + [it.other_token])
        for it in items
    ]
    expected = torch.stack(diffs).mean(0)
    assert vectors.vectors.shape == (toy.n_layers, toy.hidden_size)
    assert vectors.n_pairs == 5
    torch.testing.assert_close(vectors.vectors, expected, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("positions", ["assistant", "all"])
def test_steered_logit_diffs_equal_hook_steering(toy, positions):
    items = encode_items(toy.tokenizer, make_items(4, seed=3))
    torch.manual_seed(0)
    vectors = torch.randn(toy.n_layers, toy.hidden_size) * 2.0
    configs = [
        SteerConfig(3, 1.0),
        SteerConfig(3, -2.5),
        SteerConfig(7, 4.0),
        SteerConfig(11, -1.0),
        SteerConfig(5, 0.0),
    ]
    engine = LogitDiffEngine(toy, Backend(), batch_rows=5, positions=positions)
    result = engine.run(items, vectors, configs)
    for i, item in enumerate(items):
        start = item.steer_start(positions)
        assert result.baseline[i] == pytest.approx(hook_logit_diff(toy, item), abs=ATOL)
        for c, config in enumerate(configs):
            expected = hook_logit_diff(toy, item, config.layer, config.strength, vectors[config.layer], start)
            assert result.steered[i, c] == pytest.approx(expected, abs=ATOL), (item.item_id, config)
    # the vector must actually move something, or the comparison above proves little
    assert abs(result.steered[:, 2] - result.baseline).max() > 1e-2


def test_strength_zero_equals_unsteered(dense_toy, encoded_dense):
    vectors = torch.randn(dense_toy.n_layers, dense_toy.hidden_size)
    configs = [SteerConfig(layer, 0.0) for layer in (4, 8, 11)]
    result = LogitDiffEngine(dense_toy, Backend(), batch_rows=8).run(encoded_dense, vectors, configs)
    for c in range(len(configs)):
        assert result.steered[:, c] == pytest.approx(result.baseline, abs=1e-6)


def test_padding_batch_size_one_equals_larger_batches(toy):
    items = encode_items(toy.tokenizer, make_items(6, seed=4))
    lengths = {len(it.prompt_ids) for it in items}
    assert len(lengths) > 3, "prompts must differ in length for this test to mean anything"
    vectors = torch.randn(toy.n_layers, toy.hidden_size)
    configs = [SteerConfig(4, 1.0), SteerConfig(9, -1.0)]
    one = LogitDiffEngine(toy, Backend(), batch_rows=1).run(items, vectors, configs)
    many = LogitDiffEngine(toy, Backend(), batch_rows=18).run(items, vectors, configs)
    assert many.baseline == pytest.approx(one.baseline, abs=ATOL)
    assert many.steered == pytest.approx(one.steered, abs=ATOL)
    single = extract_caa(toy, items, concept="c", batch_size=1, backend=Backend())
    batched = extract_caa(toy, items, concept="c", batch_size=6, backend=Backend())
    torch.testing.assert_close(single.vectors, batched.vectors, atol=ATOL, rtol=1e-4)


def test_simulated_remote_path_equals_local(dense_toy, encoded_dense):
    """nnsight's remote serialization (remote="local") runs the same trace bodies."""
    vectors = extract_caa(dense_toy, encoded_dense, concept="c", batch_size=4, backend=Backend())
    remote = extract_caa(dense_toy, encoded_dense, concept="c", batch_size=4, backend=Backend("simulated-remote"))
    torch.testing.assert_close(remote.vectors, vectors.vectors, atol=1e-6, rtol=1e-6)
    configs = [SteerConfig(5, 1.0), SteerConfig(10, -1.0)]
    local = LogitDiffEngine(dense_toy, Backend(), batch_rows=6).run(encoded_dense, vectors.vectors, configs)
    backend = Backend("simulated-remote")
    sim = LogitDiffEngine(dense_toy, backend, batch_rows=6).run(encoded_dense, vectors.vectors, configs)
    assert sim.steered == pytest.approx(local.steered, abs=1e-6)
    assert backend.traffic["evaluation"].requests == 1  # all batches of a call in one request
