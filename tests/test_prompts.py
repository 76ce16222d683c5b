"""Answer tokens are derived by tokenizing prompt + answer, checked with the real Qwen tokenizer."""

from __future__ import annotations

import pytest
from conftest import make_items

from remote_steer.data.loading import load_concept
from remote_steer.data.preprocess import ABItem, preprocess
from remote_steer.data.prompts import chat_text, encode_item
from remote_steer.errors import DataError
from remote_steer.models.loading import load_tokenizer, resolve


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve("toy/qwen3"))


def test_qwen_bpe_facts_the_derivation_must_survive(tokenizer):
    # "(A" is one token; " (" + "A" are two: tokenizing a letter alone would be wrong.
    assert len(tokenizer("(A", add_special_tokens=False)["input_ids"]) == 1
    assert len(tokenizer("(B", add_special_tokens=False)["input_ids"]) == 1
    spaced = tokenizer(" (A", add_special_tokens=False)["input_ids"]
    assert [tokenizer.decode([t]) for t in spaced] == [" (", "A"]


def test_answer_tokens_and_position(tokenizer):
    item = make_items(2)[1]  # matching letter A
    encoded = encode_item(tokenizer, item)
    assert tokenizer.decode([encoded.matching_token]) == "(A"
    assert tokenizer.decode([encoded.other_token]) == "(B"
    # the prompt ends with the assistant turn, thinking disabled, right before the answer
    assert tokenizer.decode(list(encoded.prompt_ids)).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert encoded.answer_position == len(encoded.prompt_ids) - 1
    header = tokenizer.decode(list(encoded.prompt_ids[encoded.assistant_start :]))
    assert header == "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    # positive / negative prompts are the full answer tokenizations cut after the first differing token
    _, prompt = chat_text(tokenizer, item.user_prompt())
    full = tokenizer(prompt + "(A)", add_special_tokens=False)["input_ids"]
    assert list(encoded.prompt_ids) + [encoded.matching_token] == full[: len(encoded.prompt_ids) + 1]


def test_leading_space_answers_share_the_space_token(tokenizer, monkeypatch):
    """With answers written " (A)", the shared " (" joins the prompt and the letter differs."""
    import remote_steer.data.prompts as prompts

    monkeypatch.setattr(prompts, "answer_text", lambda letter: f" ({letter})")
    encoded = encode_item(tokenizer, make_items(1)[0])
    assert tokenizer.decode([encoded.prompt_ids[-1]]) == " ("
    assert {tokenizer.decode([encoded.matching_token]), tokenizer.decode([encoded.other_token])} == {"A", "B"}


def test_answers_that_tokenize_identically_are_an_error():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # A vocabulary without the letters: both answers become the unknown token.
    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "(", ")", "user", "assistant", "Choices", ":"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = (
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    item = ABItem("corrigible-neutral-HHH:7", "corrigibility", "Q?", "yes", "no", "A", False)
    with pytest.raises(DataError, match=r"corrigible-neutral-HHH:7: answers '\(A\)' and '\(B\)' tokenize identically"):
        encode_item(tok, item)


def test_answer_positions_on_real_files(tokenizer, shared_evals):
    """Every kept real item: the answer tokens are "(A"/"(B" right after the assistant header."""
    for concept in ("corrigibility", "survival-instinct", "power-seeking"):
        split = preprocess(load_concept(concept, shared_evals), concept, seed=0)
        for item in split.test[:60] + split.train[:60]:
            encoded = encode_item(tokenizer, item)
            assert tokenizer.decode([encoded.matching_token]) == f"({item.matching_letter}"
            assert tokenizer.decode([encoded.other_token]) == f"({item.other_letter}"
            assert tokenizer.decode(list(encoded.prompt_ids[-4:])) == "<think>\n\n</think>\n\n"
