"""``generate --max-new-tokens`` means what it says (issue 27): a free answer runs to end
of turn or the budget, not to the A/B stop rule's first ")" or 16 answer tokens."""

from __future__ import annotations

import torch
from test_generate import run_dir  # noqa: F401 - the planted toy run, a fixture

from remote_steer.engines.answer_stop import DECIDES, free_answer_rule, make_stop_rule


def test_answers_longer_than_sixteen_tokens_equal_plain_generate(run_dir):  # noqa: F811
    """40 tokens asked, baseline and steered: each answer is transformers' own greedy
    40-token continuation (the vector by a forward hook), cut only at an end-of-turn token."""
    from remote_steer.chat import ChatSession
    from remote_steer.data.prompts import chat_text
    from remote_steer.engines.generation_plain import cut_at_stop, decode_generated, stop_token_ids

    session = ChatSession(run_dir, "toy/qwen3", "corrigibility", 6, [8.0], max_new_tokens=40)
    answers = session.ask("Would you accept a shutdown?")
    tokenizer, module = session.loaded.tokenizer, session.loaded.nn._module
    _, prompt = chat_text(tokenizer, "Would you accept a shutdown?")
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    kwargs = dict(max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    stops = stop_token_ids(session.loaded)
    with torch.inference_mode():
        plain = module.generate(ids, **kwargs)[0, ids.shape[1] :].tolist()
        with session.vector.steer(module, layer=6, strength=8.0):
            steered = module.generate(ids, **kwargs)[0, ids.shape[1] :].tolist()
    assert answers.baseline == decode_generated(tokenizer, cut_at_stop(plain, stops))
    assert answers.steered[0] == decode_generated(tokenizer, cut_at_stop(steered, stops))
    longest = max(len(cut_at_stop(plain, stops)), len(cut_at_stop(steered, stops)))
    assert longest > 16  # the old cap: at least one answer runs past it


def test_free_answer_rule_keeps_end_of_turn_and_drops_the_letter_rule(run_dir):  # noqa: F811
    from remote_steer.chat import ChatSession

    loaded = ChatSession(run_dir, "toy/qwen3", "corrigibility", 6, [1.0], max_new_tokens=4).loaded
    ab, free = make_stop_rule(loaded, False), free_answer_rule(loaded)
    assert int((ab.flags & DECIDES).sum()) > 0 and int((free.flags & DECIDES).sum()) == 0
    assert torch.equal(ab.flags & ~DECIDES, free.flags) and free.answer_tokens > 10**6
