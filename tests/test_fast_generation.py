"""The fast generation engine against the plain engine and a plain-PyTorch hook oracle.

The toys run in float64 here so that greedy decoding has no near-ties: token
identity then tests the computation, not rounding. The oracle is transformers
``generate`` on one unpadded prompt with a forward hook adding the vector at the
steered prompt positions and at every decode step, cut with the same stop rule.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import make_items

from remote_steer.data.prompts import encode_generation_items
from remote_steer.engines import answer_stop
from remote_steer.engines.generation_fast import FastGenerationEngine
from remote_steer.engines.generation_plain import GenerationEngine
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.remote.backend import Backend

N_NEW = 6


@pytest.fixture(scope="module")
def toys64(dense_toy, moe_toy):
    """float64 copies of both toys (the session's float32 toys stay as they are)."""
    from remote_steer.models.loading import load_model, resolve

    out = {}
    for model in (dense_toy, moe_toy):
        clone = load_model(resolve(model.name), dtype="float32")
        hf = clone.nn._module
        if getattr(hf.config, "num_experts", None):
            hf.set_experts_implementation("eager")  # grouped_mm has no float64 kernel
        hf.to(torch.float64)
        out[model.name] = clone
    return out


def _vectors(model, seed=0):
    torch.manual_seed(seed)
    return torch.randn(model.n_layers, model.hidden_size, dtype=torch.float64) * 3.0


def _configs(model):
    last = model.n_layers - 1
    return [SteerConfig(3, 4.0), SteerConfig(7, -4.0), SteerConfig(last, 8.0), SteerConfig(5, 0.0)]


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

    handle = model.nn._module.model.layers[layer].register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def _oracle(model, item, rule, n_new=N_NEW, **steer):
    ids = torch.tensor([list(item.prompt_ids)])
    with torch.inference_mode(), _hook(model, ids.shape[1], **steer):
        out = model.nn._module.generate(
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


def _planted_rule(model, thinking, tokens_close=(), tokens_decide=(), answer_tokens=16):
    """The model's real rule, with some tokens it generates marked as closing the thought
    or deciding the answer, so that rows finish at different steps."""
    rule = answer_stop.make_stop_rule(model, thinking, answer_tokens)
    flags = rule.flags.clone()
    for t in tokens_close:
        flags[t] = answer_stop.THINK_CLOSE
    for t in tokens_decide:
        flags[t] = answer_stop.DECIDES
    return answer_stop.StopRule(flags, thinking, answer_tokens)


@pytest.mark.parametrize(
    "name,thinking",
    [
        ("toy/qwen3", False),
        ("toy/qwen3-moe", True),
        pytest.param("toy/qwen3", True, marks=pytest.mark.slow),
        pytest.param("toy/qwen3-moe", False, marks=pytest.mark.slow),
    ],
    ids=["dense-thinking-off", "moe-thinking-on", "dense-thinking-on", "moe-thinking-off"],
)
def test_fast_equals_hook_oracle_and_across_batch_sizes(toys64, name, thinking):
    model = toys64[name]
    items = encode_generation_items(model.tokenizer, make_items(2, seed=5), enable_thinking=thinking)
    vectors, configs = _vectors(model), _configs(model)
    full = FastGenerationEngine(model, Backend(), 64, "assistant", N_NEW, thinking, force_length=True)
    forced = full.run(items, vectors, configs)
    # plant a stop rule on tokens the rows actually produce, so rows end at different steps
    seen = [t for ids in forced.steered_ids for row in ids for t in row[1:3]]
    rule = _planted_rule(
        model, thinking, tokens_close=seen[:2] if thinking else (), tokens_decide=seen[2:5], answer_tokens=3
    )
    big = FastGenerationEngine(model, Backend(), 64, "assistant", N_NEW, thinking, stop_rule=rule).run(
        items, vectors, configs
    )
    small = FastGenerationEngine(model, Backend(), 1, "assistant", N_NEW, thinking, stop_rule=rule).run(
        items, vectors, configs
    )
    assert big == small
    finishes = set()
    for i, item in enumerate(items):
        assert big.baseline_ids[i] == _oracle(model, item, rule)
        for c, config in enumerate(configs):
            want = _oracle(
                model,
                item,
                rule,
                layer=config.layer,
                strength=config.strength,
                vector=vectors[config.layer],
                start=item.steer_start("assistant"),
            )
            assert big.steered_ids[i][c] == want, (item.item_id, config)
            finishes.add(big.steered_finish[i][c])
    assert len({big.steered_ids[0][c] for c in range(3)}) > 1, "steering must change the generations"
    assert len(finishes) > 1, "rows must finish for different reasons, or the stop rule is untested"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["toy/qwen3", "toy/qwen3-moe"])
@pytest.mark.parametrize("thinking", [False, True], ids=["thinking-off", "thinking-on"])
def test_fast_equals_plain_engine(toys64, name, thinking):
    """The plain per-configuration engine (nnsight generate, vector added every step)."""
    model = toys64[name]
    items = encode_generation_items(model.tokenizer, make_items(2, seed=6), enable_thinking=thinking)
    vectors, configs = _vectors(model, 1), _configs(model)
    plain = GenerationEngine(model, Backend(), 16, "assistant", 4, thinking).run(items, vectors, configs)
    fast = FastGenerationEngine(model, Backend(), 16, "assistant", 4, thinking).run(items, vectors, configs)
    assert fast == plain


def test_finished_rows_stop_consuming_compute(dense_toy, toys64):
    """Rows leave the batch when they finish: the rows decoded per step fall, and the
    decode work equals the tokens actually kept (not rows × steps)."""
    model = toys64[dense_toy.name]
    items = encode_generation_items(model.tokenizer, make_items(3, seed=7))
    vectors, configs = _vectors(model, 2), _configs(model)
    n_new = 8
    forced_engine = FastGenerationEngine(model, Backend(), 64, "assistant", n_new, False, force_length=True)
    forced = forced_engine.run(items, vectors, configs)
    rows = len(items) * (len(configs) + 1)
    groups = forced_engine.stats.rows_per_step  # one list per group of items (grouped by prompt length)
    assert all(len(set(g)) == 1 and len(g) == n_new - 1 for g in groups) and sum(g[0] for g in groups) == rows
    # decide on the 2nd token of half the rows' outputs
    firsts = sorted({ids[1] for per in forced.steered_ids for ids in per})
    rule = _planted_rule(model, False, tokens_decide=firsts[: max(1, len(firsts) // 2)], answer_tokens=n_new + 1)
    engine = FastGenerationEngine(model, Backend(), 64, "assistant", n_new, False, stop_rule=rule)
    result = engine.run(items, vectors, configs)
    steps = engine.stats.rows_per_step
    assert all(g == sorted(g, reverse=True) for g in steps)  # rows only ever leave
    per_step = [n for g in steps for n in g]
    assert sum(per_step) < rows * (n_new - 1)  # some rows left early
    lengths = [len(ids) for ids in result.baseline_ids] + [len(ids) for per in result.steered_ids for ids in per]
    # a row that keeps n tokens was fed n - 1 of them (the last one is never fed back)
    assert sum(per_step) == sum(n - 1 for n in lengths)
    assert engine.stats.decode_token_layers == sum(per_step) * model.n_layers
    assert engine.stats.decode_token_layers < forced_engine.stats.decode_token_layers
    # and the tokens are the forced run's, cut by the rule
    for i in range(len(items)):
        for c in range(len(configs)):
            assert result.steered_ids[i][c] == answer_stop.cut(forced.steered_ids[i][c], rule)[0]


def test_simulated_remote_returns_the_same_tokens(dense_toy):
    items = encode_generation_items(dense_toy.tokenizer, make_items(2, seed=8))
    vectors = torch.randn(dense_toy.n_layers, dense_toy.hidden_size) * 3.0
    configs = [SteerConfig(4, 4.0), SteerConfig(8, -4.0)]
    local = FastGenerationEngine(dense_toy, Backend(), 16, "assistant", 4).run(items, vectors, configs)
    remote = FastGenerationEngine(dense_toy, Backend("simulated-remote"), 16, "assistant", 4).run(
        items, vectors, configs
    )
    assert remote == local
