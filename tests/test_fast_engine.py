"""The fast engine against the straightforward one: every shortcut, exact to 1e-4.

``LogitDiffEngine`` and ``extract_caa`` (full forward passes, themselves checked
against plain PyTorch hooks in test_oracle.py) are the reference. Each shortcut of
``FastLogitDiffEngine`` / ``extract_caa_fast`` is exercised: the prefix cache read
by many continuations, layers at or below the steered one not recomputed, the
baseline from the prompt pass, two answer logits instead of the vocabulary, the
staircase of configurations (several blocks, several groups, padding), strength 0
answered from the baseline, and the shared-prefix extraction.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_items

from remote_steer.data.prompts import encode_items
from remote_steer.engines import fast_kernel
from remote_steer.engines.extraction import extract_caa
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, WorkStats, extract_caa_fast
from remote_steer.engines.sweep_plain import LogitDiffEngine, SteerConfig
from remote_steer.remote.backend import Backend

ATOL = 1e-4
# toys have 12 layers: 4 = first sweep layer (⌈0.33·12⌉), 7 a middle one, 11 the last, 0 the first
CONFIGS = [
    SteerConfig(4, 1.0),
    SteerConfig(4, -1.0),
    SteerConfig(7, 2.5),
    SteerConfig(7, 0.0),
    SteerConfig(11, -3.0),
    SteerConfig(11, 1.0),
    SteerConfig(0, -0.5),
    SteerConfig(9, 4.0),
]


@pytest.fixture(scope="module")
def encoded(dense_toy):
    items = encode_items(dense_toy.tokenizer, make_items(7, seed=11))
    assert len({len(it.prompt_ids) for it in items}) > 3  # groups really pad
    return items


def _vectors(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(model.n_layers, model.hidden_size, generator=generator) * 2.0


@pytest.mark.parametrize("positions", ["assistant", "all"])
def test_sweep_equals_full_forward_engine(toy, positions):
    items = encode_items(toy.tokenizer, make_items(7, seed=11))
    vectors = _vectors(toy)
    reference = LogitDiffEngine(toy, Backend(), batch_rows=16, positions=positions).run(items, vectors, CONFIGS)
    # batch_rows 5: one item per group and blocks of 5 + 2 configurations (strength 0 skipped)
    # batch_rows 64: several items per group (left padding) and one block
    for batch_rows in (5, 64):
        fast = FastLogitDiffEngine(toy, Backend(), batch_rows=batch_rows, positions=positions).run(
            items, vectors, CONFIGS
        )
        np.testing.assert_allclose(fast.baseline, reference.baseline, atol=ATOL, rtol=0)
        np.testing.assert_allclose(fast.steered, reference.steered, atol=ATOL, rtol=0)
    # the vectors move the numbers, or the comparison proves little
    assert np.abs(reference.steered - reference.baseline[:, None]).max() > 1e-2


def test_extraction_equals_full_forward_extraction(toy):
    items = encode_items(toy.tokenizer, make_items(6, seed=12))
    reference = extract_caa(toy, items, concept="c", batch_size=4, backend=Backend())
    for batch_size in (1, 4):
        fast = extract_caa_fast(toy, items, concept="c", batch_size=batch_size, backend=Backend())
        torch.testing.assert_close(fast.vectors, reference.vectors, atol=ATOL, rtol=1e-4)
        assert (fast.n_pairs, fast.concept, fast.model, fast.revision) == (6, "c", toy.name, toy.revision)


def test_simulated_remote_runs_the_same_kernel(dense_toy, encoded):
    """The kernel ships by value (remote="local" hides remote_steer while deserializing)."""
    vectors = _vectors(dense_toy, seed=1)
    local = FastLogitDiffEngine(dense_toy, Backend(), batch_rows=16).run(encoded, vectors, CONFIGS[:3])
    backend = Backend("simulated-remote")
    remote = FastLogitDiffEngine(dense_toy, backend, batch_rows=16).run(encoded, vectors, CONFIGS[:3])
    np.testing.assert_allclose(remote.steered, local.steered, atol=1e-6, rtol=0)
    np.testing.assert_allclose(remote.baseline, local.baseline, atol=1e-6, rtol=0)
    ref = extract_caa(dense_toy, encoded, concept="c", batch_size=4, backend=Backend())
    sim = extract_caa_fast(dense_toy, encoded, concept="c", batch_size=4, backend=backend)
    torch.testing.assert_close(sim.vectors, ref.vectors, atol=ATOL, rtol=1e-4)
    # one request per call, whatever the number of groups (traces) inside it
    assert backend.traffic["evaluation"].requests == 1
    assert backend.traffic["extraction"].requests == 1


def test_remote_backend_keeps_state_on_the_server(dense_toy, encoded, ndif_server):
    """Against the loopback NDIF server process: one job per call, client without weights,
    only [items, configurations] numbers come back."""
    from conftest import NDIF_TEST_KEY

    from remote_steer.models.loading import load_model, resolve
    from remote_steer.remote.backend import RetryPolicy

    before = ndif_server.submissions
    client = load_model(resolve("toy/qwen3"), dtype="float32", weights=False)
    fast = RetryPolicy(first_delay_s=0.05, max_delay_s=0.2, poll_interval_s=0.05)
    backend = Backend("remote", host=ndif_server.url, api_key=NDIF_TEST_KEY, retry=fast)
    vectors = _vectors(dense_toy, seed=2)
    remote = FastLogitDiffEngine(client, backend, batch_rows=12).run(encoded, vectors, CONFIGS)
    extracted = extract_caa_fast(client, encoded, concept="c", batch_size=3, backend=backend)
    local = LogitDiffEngine(dense_toy, Backend(), batch_rows=16).run(encoded, vectors, CONFIGS)
    np.testing.assert_allclose(remote.steered, local.steered, atol=ATOL, rtol=0)
    np.testing.assert_allclose(remote.baseline, local.baseline, atol=ATOL, rtol=0)
    reference = extract_caa(dense_toy, encoded, concept="c", batch_size=4, backend=Backend())
    torch.testing.assert_close(extracted.vectors, reference.vectors, atol=ATOL, rtol=1e-4)
    assert ndif_server.submissions - before == 2
    traffic = backend.traffic["evaluation"]
    assert traffic.requests == 1
    assert traffic.bytes_received < 64 * len(encoded) * (len(CONFIGS) + 1) + 4096


def _hidden_states(model, ids):
    """Decoder-layer outputs [layers, T, hidden] of one unpadded prompt, via hooks."""
    captured = []
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out))
        for layer in model.nn._module.model.layers
    ]
    try:
        with torch.inference_mode():
            model.nn._module(input_ids=torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack([c[0] for c in captured])


def test_prefix_cache_continuation_equals_full_forward(dense_toy, encoded):
    """Shortcut 1: window columns continued from the prefix cache = the full forward, every layer;
    and the cache is only read (it keeps its length for the next configuration)."""
    model = dense_toy
    item = encoded[2]
    ids = list(item.prompt_ids)
    full = _hidden_states(model, ids)
    hf = model.nn._module
    split = item.assistant_start
    with torch.inference_mode():
        out = hf(input_ids=torch.tensor([ids[:split]]), use_cache=True, logits_to_keep=1)
        cache = fast_kernel.output_cache(out)
        keys, values = fast_kernel.cache_tensors(cache, split)
        window = torch.arange(split, len(ids))[None]
        hidden = hf.model.embed_tokens(torch.tensor([ids[split:]]))
        cos, sin = hf.model.rotary_emb(hidden, window)
        keyword = fast_kernel.cache_keyword()
        mask = fast_kernel._mask(
            hf.model, hidden, torch.ones(1, len(ids), dtype=torch.long), keys, values, window, keyword
        )
        for layer in range(model.n_layers):
            kv = fast_kernel.ReadOnlyKV(keys[layer], values[layer])
            hidden = fast_kernel._run_layer(hf.model, layer, hidden, mask, window, cos, sin, kv, keyword)
            torch.testing.assert_close(hidden[0], full[layer, split:], atol=ATOL, rtol=1e-4)
    assert all(layer.keys.shape[-2] == split for layer in cache.layers)


def test_two_answer_logits_equal_full_vocabulary_logits(dense_toy, encoded):
    """Shortcut 4: final norm + two output-projection rows = the full logits' difference."""
    hf = dense_toy.nn._module
    ids = list(encoded[0].prompt_ids)
    with torch.inference_mode():
        out = hf(input_ids=torch.tensor([ids]), output_hidden_states=True)
        logits = out.logits[0, -1]
        last = _hidden_states(dense_toy, ids)[-1, -1]
        tokens = torch.tensor([[encoded[0].matching_token, encoded[0].other_token]])
        diff = fast_kernel.answer_diff(hf.model, hf.lm_head, last[None], tokens)
    expected = logits[tokens[0, 0]] - logits[tokens[0, 1]]
    assert float(diff[0]) == pytest.approx(float(expected), abs=ATOL)


def test_work_is_the_floor_without_padding(dense_toy, encoded):
    """One item per group (no padding): the prompt once, then only the window above each layer."""
    vectors = _vectors(dense_toy)
    configs = [c for c in CONFIGS if c.strength != 0.0]
    engine = FastLogitDiffEngine(dense_toy, Backend(), batch_rows=len(configs))
    calls = []
    engine.run(encoded, vectors, CONFIGS, on_rows=calls.append)
    n = dense_toy.n_layers
    prompt = sum(len(it.prompt_ids) for it in encoded) * n
    window = {len(it.prompt_ids) - it.assistant_start for it in encoded}
    assert window == {7}  # Qwen3's assistant turn with thinking off: <|im_start|>assistant\n<think>\n\n</think>\n\n
    steered = sum(7 * (n - 1 - c.layer) for c in configs) * len(encoded)
    assert engine.stats.padding_token_layers == 0
    assert engine.stats.prompt_token_layers == prompt
    assert engine.stats.steered_token_layers == steered
    assert engine.stats.traces == len(encoded)
    assert sum(calls) == len(encoded) * (len(CONFIGS) + 1)
    stats = WorkStats()
    extract_caa_fast(dense_toy, encoded, concept="c", batch_size=1, backend=Backend(), stats=stats)
    assert stats.token_layers == prompt + 2 * n * len(encoded)


def test_layer_outside_model_is_refused(dense_toy, encoded):
    with pytest.raises(ValueError, match="outside"):
        FastLogitDiffEngine(dense_toy, Backend()).run(encoded[:1], _vectors(dense_toy), [SteerConfig(12, 1.0)])
