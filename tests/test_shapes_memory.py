"""Registry shapes for the bench, FLOP counts and the fast engine's memory sizing (no model built)."""

from __future__ import annotations

import pytest

from remote_steer.engines import memory
from remote_steer.errors import ModelError
from remote_steer.models.shapes import flops_per_token_layer, shape_config


def test_shape_config_keeps_depth_heads_and_vocabulary():
    full = shape_config("Qwen3-4B")
    assert (full.num_hidden_layers, full.hidden_size, full.num_attention_heads, full.num_key_value_heads) == (
        36,
        2560,
        32,
        8,
    )
    assert (full.head_dim, full.intermediate_size, full.vocab_size, full.tie_word_embeddings) == (
        128,
        9728,
        151936,
        True,
    )
    narrow = shape_config("Qwen3-4B", hidden=512)
    assert (narrow.num_hidden_layers, narrow.num_attention_heads, narrow.vocab_size) == (36, 32, 151936)
    assert narrow.head_dim == 16 and narrow.intermediate_size == round(9728 * 512 / 2560)
    moe = shape_config("Qwen3-30B-A3B")
    assert (moe.num_hidden_layers, moe.num_experts, moe.num_experts_per_tok, moe.moe_intermediate_size) == (
        48,
        128,
        8,
        768,
    )
    smol = shape_config("small/smollm2-135m-instruct")
    assert smol.model_type == "llama" and smol.num_hidden_layers == 30 and smol.vocab_size == 49152
    with pytest.raises(ModelError):
        shape_config("toy/qwen3")
    with pytest.raises(ModelError):
        shape_config("Qwen3-4B", hidden=100)  # not a multiple of 2 × 32 heads


def test_parameter_count_and_flops_by_hand():
    shape = memory.Shape.from_config(shape_config("Qwen3-4B"), 2)
    # config.json of Qwen3-4B: 4.02 B parameters (tied embeddings), norms excluded here
    assert shape.params / 1e9 == pytest.approx(4.02, abs=0.01)
    config = shape_config("small/smollm2-135m-instruct")
    h, d = 576, 64
    by_hand = 2 * (h * 9 * d * 2 + h * 3 * d * 2 + 3 * h * 1536 + 2 * 9 * d * 100)
    assert flops_per_token_layer(config, 100) == by_hand


def test_block_rows_shrink_to_the_memory_available():
    shape = memory.Shape.from_config(shape_config("Qwen3-4B"), 2)
    width, window = 160, 7
    one = memory.block_bytes(shape, 1, width, window)
    # by hand: per row, K/V copy + prefix⊕window (2 × 2 × (w + c) × kv × d), scores, MLP, hidden
    assert one == 2 * (
        4 * (width + window) * 8 * 128 + 32 * window * (width + window) + 3 * window * 9728 + 4 * window * 2560
    )
    assert memory.fit_block_rows(shape, 512, width, window, available=10**12) == 512
    assert memory.fit_block_rows(shape, 512, width, window, available=20 * one) == 10  # half of 20 rows' worth
    assert memory.fit_block_rows(shape, 512, width, window, available=1) == 1
    peak = memory.peak_memory(shape, group=4, width=width, window=window, block_rows=64)
    assert peak["total"] == peak["weights"] + peak["group"] + peak["block"]
