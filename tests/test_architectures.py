"""Every decoder architecture in ``models.architectures``: fast = plain = plain-PyTorch hook oracle.

One random-weight toy per architecture (``registry.ARCH_TOYS``: 4 layers, hidden 64, built
offline from the architecture's own transformers config, with its quirks switched on: a
sliding window of 8 tokens shorter than every prompt, Gemma 2's logit soft-cap at 0.5 so a
missing cap shows in every number, Gemma 3's per-kind rotary embeddings), plus the Qwen3
and Qwen3-MoE toys. For each: CAA extraction, the logit sweep and greedy generation, the
fast engines against the plain ones against hooks on the transformers module itself.
Tolerances scale with the magnitudes compared (float32 rounding grows with them).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from conftest import hf_module, hook_layer_outputs, hook_logit_diff, make_items

from remote_steer.data.prompts import encode_generation_items, encode_items
from remote_steer.engines import answer_stop
from remote_steer.engines.extraction import extract_caa
from remote_steer.engines.generation_fast import FastGenerationEngine
from remote_steer.engines.generation_plain import GenerationEngine
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast, supports_fast_path
from remote_steer.engines.sweep_plain import LogitDiffEngine, SteerConfig
from remote_steer.models.architectures import ARCHITECTURES, fast_path_refusal
from remote_steer.models.registry import ARCH_TOYS
from remote_steer.remote.backend import Backend

NAMES = [c.name for c in ARCH_TOYS] + ["toy/qwen3", "toy/qwen3-moe"]
REL = 2e-5  # float32: tolerance per unit of the largest magnitude compared


def _load(name: str, dtype=torch.float32):
    """The toy; the Qwen3 ones resized to the coverage toys' 4 layers × hidden 64 (their
    full-size forms are covered by test_fast_engine.py and test_fast_generation.py)."""
    from remote_steer.models.loading import load_model, resolve
    from remote_steer.models.toy import ensure_toy

    source = resolve(name)
    if name in ("toy/qwen3", "toy/qwen3-moe"):
        source = resolve(str(ensure_toy(name, n_layers=4, hidden_size=64)))
    model = load_model(source, dtype="float32")
    if dtype != torch.float32:
        hf = hf_module(model)
        if getattr(hf.config, "num_experts", None):
            hf.set_experts_implementation("eager")  # grouped_mm has no float64 kernel
        hf.to(dtype)
    return model


@pytest.fixture(scope="module", params=NAMES)
def arch_toy(request):
    return _load(request.param)


def _tol(*arrays) -> float:
    scale = max(float(np.abs(np.asarray(a)).max()) for a in arrays)
    return REL * max(1.0, scale) * 10


def _vectors(model, items, seed=0):
    """Random directions at each layer's residual norm: big enough to move every number."""
    norms = hook_layer_outputs(model, list(items[0].prompt_ids)).norm(dim=-1)
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(model.n_layers, model.hidden_size, generator=generator)
    return raw / raw.norm(dim=-1, keepdim=True) * norms[:, None] * 0.5


def _configs(model):
    last = model.n_layers - 1
    return [SteerConfig(0, 1.0), SteerConfig(1, -2.0), SteerConfig(last // 2, 0.0), SteerConfig(last, 1.5)]


def test_every_architecture_takes_the_fast_path(arch_toy):
    assert supports_fast_path(arch_toy), arch_toy.fast_path_refusal
    assert arch_toy.architecture is not None


def test_extraction_fast_equals_plain_equals_hooks(arch_toy):
    items = encode_items(arch_toy.tokenizer, make_items(3, seed=21))
    plain = extract_caa(arch_toy, items, concept="c", batch_size=3, backend=Backend())
    fast = extract_caa_fast(arch_toy, items, concept="c", batch_size=3, backend=Backend())
    oracle = torch.stack(
        [
            hook_layer_outputs(arch_toy, list(it.prompt_ids) + [it.matching_token])
            - hook_layer_outputs(arch_toy, list(it.prompt_ids) + [it.other_token])
            for it in items
        ]
    ).mean(0)
    tol = _tol(oracle.numpy())
    torch.testing.assert_close(plain.vectors, oracle, atol=tol, rtol=0)
    torch.testing.assert_close(fast.vectors, oracle, atol=tol, rtol=0)
    torch.testing.assert_close(fast.residual_norms, plain.residual_norms, atol=_tol(plain.residual_norms), rtol=0)


def test_sweep_fast_equals_plain_equals_hooks(arch_toy):
    items = encode_items(arch_toy.tokenizer, make_items(3, seed=22))
    assert min(len(it.prompt_ids) for it in items) > 8  # longer than the toys' sliding window
    vectors, configs = _vectors(arch_toy, items), _configs(arch_toy)
    plain = LogitDiffEngine(arch_toy, Backend(), batch_rows=8).run(items, vectors, configs)
    fasts = [FastLogitDiffEngine(arch_toy, Backend(), batch_rows=rows).run(items, vectors, configs) for rows in (3, 64)]
    oracle_base = np.array([hook_logit_diff(arch_toy, it) for it in items])
    oracle = np.array(
        [
            [
                hook_logit_diff(arch_toy, it, c.layer, c.strength, vectors[c.layer], it.steer_start("assistant"))
                for c in configs
            ]
            for it in items
        ]
    )
    tol = _tol(oracle, oracle_base)
    for result in [plain, *fasts]:
        np.testing.assert_allclose(result.baseline, oracle_base, atol=tol, rtol=0)
        np.testing.assert_allclose(result.steered, oracle, atol=tol, rtol=0)
    assert np.abs(oracle - oracle_base[:, None]).max() > 100 * tol, "steering must move the numbers"


def test_held_prompt_passes_equal_hooks_with_no_second_prompt_pass(arch_toy):
    """A sweep that keeps its prompt passes (``HeldPrompts``, for the side-effects matrix)
    steers them again at other configurations and vectors with no prompt pass: the numbers
    equal plain hooks, as a fresh pass's do, and it holds only the layers it may need."""
    from remote_steer.engines.sweep_fast import HeldPrompts

    items = encode_items(arch_toy.tokenizer, make_items(5, seed=23))
    last = arch_toy.n_layers - 1
    vectors = torch.stack([_vectors(arch_toy, items, seed) for seed in (1, 2)])
    engine = FastLogitDiffEngine(arch_toy, Backend(), batch_rows=6, hold=HeldPrompts(frozenset({1, last})))
    engine.run_vectors(items, vectors[:1], [SteerConfig(1, 1.0), SteerConfig(last, -1.0)])
    assert engine.hold is not None and engine.hold.holds(items)
    prompt_work = engine.stats.prompt_token_layers
    configs = [SteerConfig(1, 2.0), SteerConfig(last, -1.5)]
    only = [[True, False], [False, True]]  # vector 0 at layer 1, vector 1 at the last layer
    baseline, steered = engine.run_held(items, vectors, configs, only)
    assert engine.stats.prompt_token_layers == prompt_work  # no prompt pass
    oracle_base = np.array([hook_logit_diff(arch_toy, it) for it in items])
    oracle = np.array(
        [
            [
                hook_logit_diff(arch_toy, it, c.layer, c.strength, vectors[v, c.layer], it.steer_start("assistant"))
                for v, c in enumerate(configs)
            ]
            for it in items
        ]
    )
    tol = _tol(oracle, oracle_base)
    np.testing.assert_allclose(baseline, oracle_base, atol=tol, rtol=0)
    np.testing.assert_allclose(np.stack([steered[:, 0, 0], steered[:, 1, 1]], axis=1), oracle, atol=tol, rtol=0)
    assert np.isnan(steered[:, 0, 1]).all() and np.isnan(steered[:, 1, 0]).all()
    assert np.abs(oracle - oracle_base[:, None]).max() > 100 * tol, "steering must move the numbers"
    with pytest.raises(ValueError, match="not among the held layers"):
        engine.run_held(items, vectors, [SteerConfig(0, 1.0)])
    # layers below the lowest held one keep no prefix keys/values, the others no residual
    group = engine.hold.groups[0]
    assert group.layers[1].keys.stride()[0] == 0 and group.layers[last].keys.stride()[0] != 0
    assert group.resid[1].stride()[0] != 0 and (last < 3 or group.resid[2].stride()[0] == 0)


@contextlib.contextmanager
def _hook(model, prompt_len, layer=None, strength=0.0, vector=None, start=0):
    if layer is None:
        yield
        return

    def add(_module, _inputs, output):
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        if hidden.shape[1] == prompt_len:
            hidden[:, start:, :] += strength * vector
        else:
            hidden += strength * vector
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = hf_module(model).model.layers[layer].register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def _generate_oracle(model, item, rule, n_new, **steer):
    """transformers' own ``generate`` on one unpadded prompt, a hook adding the vector."""
    ids = torch.tensor([list(item.prompt_ids)])
    with torch.inference_mode(), _hook(model, ids.shape[1], **steer):
        out = hf_module(model).generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n_new,
            do_sample=False,
            eos_token_id=None,
            temperature=None,
            top_p=None,
            top_k=None,
        )
    return answer_stop.cut(out[0, ids.shape[1] :].tolist(), rule)[0]


@pytest.mark.parametrize("name", NAMES)
def test_generation_fast_equals_plain_equals_hooks(name):
    """float64 (no near-ties in greedy decoding), so token identity tests the computation;
    float32 for eager attention (Gemma 2), whose float64 softmax turns a left-padding row's
    fully masked columns into NaN in transformers' own forward pass."""
    model = _load(name, torch.float64)
    if hf_module(model).config._attn_implementation == "eager":
        model = _load(name)
    n_new = 4
    items = encode_generation_items(model.tokenizer, make_items(2, seed=23))
    vectors = _vectors(model, items, seed=1).to(torch.float64) * 4
    configs = [c for c in _configs(model) if c.strength != 0.0]
    rule = answer_stop.make_stop_rule(model, False, 16)
    fast = FastGenerationEngine(model, Backend(), 64, "assistant", n_new, False, force_length=True).run(
        items, vectors, configs
    )
    plain = GenerationEngine(model, Backend(), 64, "assistant", n_new, False).run(items, vectors, configs)
    for i, item in enumerate(items):
        want = _generate_oracle(model, item, rule, n_new)
        assert fast.baseline_ids[i][: len(want)] == want
        assert plain.baseline_ids[i] == want
        for c, config in enumerate(configs):
            steer = dict(
                layer=config.layer,
                strength=config.strength,
                vector=vectors[config.layer],
                start=item.steer_start("assistant"),
            )
            want = _generate_oracle(model, item, rule, n_new, **steer)
            assert plain.steered_ids[i][c] == want, (item.item_id, config)
            assert fast.steered_ids[i][c][: len(want)] == want, (item.item_id, config)
    steered = {fast.steered_ids[i][c] for i in range(len(items)) for c in range(len(configs))}
    assert len(steered | set(fast.baseline_ids)) > 1, "steering must change the generations"


def test_the_table_refuses_what_it_does_not_know(dense_toy):
    """An architecture outside the table, or one whose layout moved, gets one line and the plain engines."""
    hf = hf_module(dense_toy)
    original = hf.config.model_type
    try:
        hf.config.model_type = "gpt2"
        reason = fast_path_refusal(hf)
        assert reason is not None and "gpt2" in reason and "\n" not in reason
        assert not supports_fast_path(dense_toy)
    finally:
        hf.config.model_type = original
    assert supports_fast_path(dense_toy)
    assert set(ARCHITECTURES) >= {
        "qwen2",
        "llama",
        "mistral",
        "gemma2",
        "gemma3_text",
        "phi3",
        "olmo2",
        "mixtral",
        "qwen3",
        "qwen3_moe",
    }
