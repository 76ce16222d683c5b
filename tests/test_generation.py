"""Generation engine against independent computations.

The oracle is plain transformers ``generate`` on one unpadded prompt at a time, with
a PyTorch forward hook on a decoder layer that adds ``strength × vector`` at the
steered prompt positions during the prefill and at the one new position of every
decode step (with the KV cache a decode step's hidden state has length 1). No
nnsight, no padding, no batching, eos stopping on: so the engine's per-row routing,
left padding, per-step intervention and eos handling are all checked.
"""

from __future__ import annotations

import contextlib

import pandas as pd
import pytest
import torch
from conftest import make_items

from remote_steer.data.preprocess import ABItem
from remote_steer.data.prompts import encode_items
from remote_steer.engines import answer_stop
from remote_steer.engines.generation_plain import (
    GENERATION_COLUMNS,
    GenerationEngine,
    GenerationResult,
    generation_rows,
    generation_summary,
)
from remote_steer.engines.sweep_plain import LogitDiffEngine, SteerConfig
from remote_steer.remote.backend import Backend

N_NEW = 3  # generated tokens per row: enough to see later steps steered, cheap on CPU
STRONG = 30.0  # strength at which an unembedding-direction vector decides the next token


def _hf(model):
    return model.nn._module


def _stops(model) -> set[int]:
    eos = _hf(model).generation_config.eos_token_id
    return {*(eos if isinstance(eos, list) else [eos]), model.tokenizer.eos_token_id, model.tokenizer.pad_token_id}


@contextlib.contextmanager
def _steering_hook(model, prompt_len, layer=None, strength=0.0, vector=None, start=0, skip_last_prefill=False):
    """Add strength × vector at prompt positions >= start (prefill) and at every new position.

    ``skip_last_prefill`` reproduces the reference CAA bug: the prompt's last position
    is not steered, so the vector first acts on the second generated token.
    """
    if layer is None:
        yield
        return

    def add(_module, _inputs, output):
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        if hidden.shape[1] == prompt_len:  # prefill: the whole prompt
            stop = prompt_len - 1 if skip_last_prefill else prompt_len
            hidden[:, start:stop, :] += strength * vector
        else:  # a decode step: one new position (KV cache)
            assert hidden.shape[1] == 1
            hidden += strength * vector
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = _hf(model).model.layers[layer].register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def _oracle_generate(model, item, n_new=N_NEW, **steer) -> tuple[int, ...]:
    """Greedy ids after the prompt, unpadded, cut before the first stop token."""
    ids = torch.tensor([list(item.prompt_ids)])
    with torch.inference_mode(), _steering_hook(model, ids.shape[1], **steer):
        out = _hf(model).generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, do_sample=False)
    new = out[0, ids.shape[1] :].tolist()
    stops = _stops(model)
    cut = next((k for k, t in enumerate(new) if t in stops), len(new))
    # the engines also stop once the answer is decided (a ")" in the answer): same rule here
    return answer_stop.cut(new[:cut], answer_stop.make_stop_rule(model, thinking=False))[0]


def _oracle_logits(model, item, **steer) -> torch.Tensor:
    """Full-vocabulary logits at the answer position (the prompt's last), steered by hook."""
    ids = torch.tensor([list(item.prompt_ids)])
    with torch.inference_mode(), _steering_hook(model, ids.shape[1], **steer):
        return _hf(model)(input_ids=ids, logits_to_keep=1).logits[0, -1].float()


def _answer_ids(model) -> tuple[int, int]:
    a, b = model.tokenizer.convert_tokens_to_ids(["(A", "(B"])
    return a, b


def _vectors(model, seed=0) -> torch.Tensor:
    """Random rows, except the last layer's: W_U["(A"] − W_U["(B"] (decides the answer when strong)."""
    torch.manual_seed(seed)
    vectors = torch.randn(model.n_layers, model.hidden_size) * 2.0
    unembed = _hf(model).lm_head.weight.detach().float()
    a, b = _answer_ids(model)
    vectors[model.n_layers - 1] = unembed[a] - unembed[b]
    return vectors


def _configs(model) -> list[SteerConfig]:
    last = model.n_layers - 1
    return [
        SteerConfig(3, 4.0),
        SteerConfig(7, -4.0),
        SteerConfig(last, STRONG),  # -> "(A" first
        SteerConfig(last, -STRONG),  # -> "(B" first
        SteerConfig(5, 0.0),  # == unsteered
    ]


@pytest.fixture(scope="module")
def cases(dense_toy, moe_toy):
    """Per toy: items of varied prompt length, vectors, configs, and one batched engine run."""
    out = {}
    for model in (dense_toy, moe_toy):
        items = encode_items(model.tokenizer, make_items(2, seed=5))  # one matching "A", one "B"
        vectors, configs = _vectors(model), _configs(model)
        engine = GenerationEngine(model, Backend(), batch_rows=16, max_new_tokens=N_NEW)
        out[model.name] = (items, vectors, configs, engine.run(items, vectors, configs))
    return out


def test_engine_equals_hook_oracle(toy, cases):
    items, vectors, configs, result = cases[toy.name]
    assert len({len(it.prompt_ids) for it in items}) == len(items), "prompt lengths must differ (padding)"
    changed = 0
    for i, item in enumerate(items):
        baseline = _oracle_generate(toy, item)
        assert result.baseline_ids[i] == baseline, item.item_id
        for c, config in enumerate(configs):
            if config.strength == 0.0:
                assert result.steered_ids[i][c] == baseline
                continue
            expected = _oracle_generate(
                toy,
                item,
                layer=config.layer,
                strength=config.strength,
                vector=vectors[config.layer],
                start=item.steer_start("assistant"),
            )
            assert result.steered_ids[i][c] == expected, (item.item_id, config)
            changed += expected != baseline
    assert changed >= len(items) * 2, "steering must change generations, or the comparison proves little"
    tokenizer = toy.tokenizer
    assert result.steered_text[0][2] == tokenizer.decode(list(result.steered_ids[0][2]), skip_special_tokens=True)
    assert result.steered_text[0][2].startswith("(A")


def test_vector_acts_from_the_first_generated_token(dense_toy, cases):
    """The first new token is already steered; the reference CAA bug (the prompt's last
    position unsteered) would give the unsteered first token instead."""
    items, vectors, configs, result = cases[dense_toy.name]
    c = 2  # last layer, +STRONG along W_U["(A"] − W_U["(B"]
    config = configs[c]
    a, _ = _answer_ids(dense_toy)
    for i, item in enumerate(items):
        steer = dict(
            layer=config.layer,
            strength=config.strength,
            vector=vectors[config.layer],
            start=item.steer_start("assistant"),
        )
        unsteered_first = int(_oracle_logits(dense_toy, item).argmax())
        steered_first = int(_oracle_logits(dense_toy, item, **steer).argmax())
        assert steered_first == a != unsteered_first
        assert result.steered_ids[i][c][0] == steered_first
        assert result.baseline_ids[i][0] == unsteered_first
        late = _oracle_generate(dense_toy, item, n_new=2, skip_last_prefill=True, **steer)
        assert late[0] == unsteered_first != result.steered_ids[i][c][0]
        assert late[1] == a  # from the second token on the late hook steers too


def test_first_token_is_the_argmax_of_the_logit_path(toy, cases):
    """First generated token == argmax over the full vocabulary of the steered logits at
    the answer position; when that is an answer token, it agrees with the sign of
    LogitDiffEngine's logit diff for the same configuration."""
    items, vectors, configs, result = cases[toy.name]
    diffs = LogitDiffEngine(toy, Backend(), batch_rows=32).run(items, vectors, configs)
    answer_cases = 0
    for i, item in enumerate(items):
        assert result.baseline_ids[i][0] == int(_oracle_logits(toy, item).argmax())
        for c, config in enumerate(configs):
            logits = _oracle_logits(
                toy,
                item,
                layer=config.layer,
                strength=config.strength,
                vector=vectors[config.layer],
                start=item.steer_start("assistant"),
            )
            first = result.steered_ids[i][c][0]
            assert first == int(logits.argmax()), (item.item_id, config)
            diff = diffs.steered[i, c]
            assert diff == pytest.approx(float(logits[item.matching_token] - logits[item.other_token]), abs=1e-4)
            if first in (item.matching_token, item.other_token):
                answer_cases += 1
                assert (first == item.matching_token) == (diff > 0), (item.item_id, config)
    # the last-layer configs put "(A" (+) and "(B" (−) first for every item, and the
    # items' matching letters differ, so both signs of the diff are exercised
    assert answer_cases >= 2 * len(items)
    assert {it.matching_letter for it in items} == {"A", "B"}


def test_batch_size_one_equals_batched_and_simulated_remote_equals_local(dense_toy, cases):
    items, vectors, configs, batched = cases[dense_toy.name]
    subset = configs[2:3]  # one steered configuration keeps batch size 1 cheap
    one = GenerationEngine(dense_toy, Backend(), batch_rows=1, max_new_tokens=N_NEW).run(items, vectors, subset)
    assert one.baseline_ids == batched.baseline_ids
    assert [row[0] for row in one.steered_ids] == [row[2] for row in batched.steered_ids]
    backend = Backend("simulated-remote")
    progress = []
    remote = GenerationEngine(dense_toy, backend, batch_rows=5, max_new_tokens=N_NEW).run(
        items, vectors, configs, on_rows=progress.append
    )
    assert remote == batched
    assert progress == [len(items) * (1 + len(configs))]
    assert backend.traffic["generation"].requests == 1  # all batches of a call in one request


def test_remote_generation_against_loopback_server_equals_local(dense_toy, cases, ndif_server):
    """The same engine through the NDIF protocol (the loopback server process), with a
    weightless client model: equal ids, and only ids come back."""
    from conftest import NDIF_TEST_KEY

    from remote_steer.models.loading import load_model, resolve
    from remote_steer.remote.backend import RetryPolicy

    items, vectors, configs, local = cases[dense_toy.name]
    client = load_model(resolve(dense_toy.name), dtype="float32", weights=False)
    backend = Backend(
        "remote",
        host=ndif_server.url,
        api_key=NDIF_TEST_KEY,
        retry=RetryPolicy(first_delay_s=0.05, max_delay_s=0.2, poll_interval_s=0.05),
    )
    remote = GenerationEngine(client, backend, batch_rows=16, max_new_tokens=N_NEW).run(items, vectors, configs)
    assert remote == local
    traffic = backend.traffic["generation"]
    assert traffic.requests == 1
    rows = len(items) * (1 + len(configs))
    assert 0 < traffic.bytes_received < 1000 + rows * N_NEW * 8  # token ids, not hidden states or logits


def test_all_positions_mode_equals_hook_oracle(dense_toy, cases):
    items, vectors, _, _ = cases[dense_toy.name]
    config = SteerConfig(2, 6.0)
    engine = GenerationEngine(dense_toy, Backend(), batch_rows=4, positions="all", max_new_tokens=N_NEW)
    result = engine.run(items, vectors, [config])
    for i, item in enumerate(items):
        expected = _oracle_generate(dense_toy, item, layer=2, strength=6.0, vector=vectors[2], start=0)
        assert result.steered_ids[i][0] == expected


def test_rows_that_stop_early_are_cut_at_eos(dense_toy):
    """A row steered onto <|im_end|> ends at once while the rest of its batch goes on."""
    items = encode_items(dense_toy.tokenizer, make_items(2, seed=6))
    eos = dense_toy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    vectors = torch.zeros(dense_toy.n_layers, dense_toy.hidden_size)
    vectors[-1] = _hf(dense_toy).lm_head.weight.detach()[eos]
    configs = [SteerConfig(dense_toy.n_layers - 1, STRONG)]
    result = GenerationEngine(dense_toy, Backend(), batch_rows=4, max_new_tokens=N_NEW).run(items, vectors, configs)
    for i in range(len(items)):
        assert result.steered_ids[i][0] == () and result.steered_text[i][0] == ""
        assert len(result.baseline_ids[i]) == N_NEW  # the unsteered rows in the same batch kept going
        assert result.baseline_ids[i] == _oracle_generate(dense_toy, items[i])


# --------------------------------------------------------------------------- results


def _ab(item_id: str, matching: str) -> ABItem:
    return ABItem(item_id, "corrigibility", "Q?", "I consent", "I do not consent", matching, False)


def test_generation_rows_and_summary():
    items = [_ab("f:1", "A"), _ab("f:2", "B"), _ab("f:3", "A")]
    configs = [SteerConfig(4, 1.0), SteerConfig(8, -1.0)]
    result = GenerationResult(
        baseline_ids=((1,), (2,), (3,)),
        steered_ids=(((1,), (1,)), ((2,), (2,)), ((3,), (3,))),
        baseline_text=("(A)", "(A)", "I cannot answer"),
        steered_text=(("(A)", "(B)"), ("(B) I do not consent", "A good question"), ("I consent", "")),
    )
    frame = generation_rows("toy/qwen3", "corrigibility", 12, "toy", items, configs, result)
    assert list(frame.columns)[: len(GENERATION_COLUMNS)] == list(GENERATION_COLUMNS)
    assert len(frame) == 6
    row = frame[(frame.item_id == "f:2") & (frame.layer == 8)].iloc[0]
    assert (row.valid, row.matches_behavior, row.parse_rule) == (False, False, "no answer")
    assert pd.isna(row.letter)  # missing, never a guessed letter (pandas 3 str columns hold NaN)
    row = frame[(frame.item_id == "f:3") & (frame.layer == 4)].iloc[0]
    assert (row.letter, row.valid, row.matches_behavior, row.parse_rule) == ("A", True, True, "option text")
    assert (row.baseline_valid, row.baseline_matches, row.layer_fraction) == (
        False,
        False,
        (4 + 1) / 12,
    )  # depth of the layer's output

    summary = generation_summary(frame).set_index("layer")
    # layer 4: all valid; matches: f:1 A=A yes, f:2 B=B yes, f:3 A=A yes -> 1.0
    # baseline: valid f:1 (A, matches), f:2 (A, not B) -> 1/2; f:3 invalid
    assert summary.loc[4, "validity_rate"] == 1.0
    assert summary.loc[4, "behavior_rate"] == 1.0
    assert summary.loc[4, "baseline_behavior_rate"] == 0.5
    assert summary.loc[4, "change_vs_baseline"] == 0.5
    assert summary.loc[4, "n_items"] == 3
    # layer 8: only f:1 valid (B, not matching) -> validity 1/3, behaviour 0
    assert summary.loc[8, "validity_rate"] == pytest.approx(1 / 3)
    assert summary.loc[8, "behavior_rate"] == 0.0
    assert summary.loc[8, "change_vs_baseline"] == -0.5
    empty = generation_summary(frame.assign(valid=False, matches_behavior=False))
    assert empty["behavior_rate"].isna().all() and empty["change_vs_baseline"].isna().all()
    assert (empty["validity_rate"] == 0.0).all()
