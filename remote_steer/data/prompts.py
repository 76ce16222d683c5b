"""Chat-formatted prompts and answer tokens, derived by tokenizing, never guessed.

The answer position and the two answer token ids come from tokenizing the prompt
followed by each answer and finding the first token where the two differ. A letter
tokenized alone would be wrong for BPE vocabularies such as Qwen's, where ``(A``
is one token but `` (`` + ``A`` are two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from remote_steer.data.preprocess import ABItem
from remote_steer.errors import DataError

SteerPositions = Literal["assistant", "all"]
POSITIONS: tuple[str, ...] = get_args(SteerPositions)


@dataclass(frozen=True)
class EncodedItem:
    """One held-out or training item, tokenized for one model.

    ``prompt_ids`` runs up to and including the answer position (the chat prompt and
    any tokens the two answers share, such as a leading ``" ("``). The logits at its
    last position predict the answer; ``prompt_ids + [matching_token]`` is the CAA
    positive prompt and ``prompt_ids + [other_token]`` the negative one.
    """

    item_id: str
    concept: str
    matching_letter: str
    prompt_ids: tuple[int, ...]
    assistant_start: int  # first token of the assistant turn (``<|im_start|>assistant``)
    matching_token: int
    other_token: int

    @property
    def answer_position(self) -> int:
        return len(self.prompt_ids) - 1

    def steer_start(self, positions: SteerPositions) -> int:
        """First position that receives the steering vector."""
        return 0 if positions == "all" else self.assistant_start


def answer_text(letter: str) -> str:
    return f"({letter})"


def chat_text(tokenizer: Any, user_text: str, *, enable_thinking: bool = False) -> tuple[str, str]:
    """The rendered chat without and with the assistant generation prompt.

    Thinking is off by default so that Qwen3's assistant turn starts at the answer
    (its template then emits an empty ``<think></think>`` block).
    """
    messages = [{"role": "user", "content": user_text}]
    if getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name_or_path", "") or "the model"
        raise DataError(
            f"{name}: the tokenizer has no chat template (a base model?); the prompts come from the model's own "
            "template, so expected a chat (instruct) model or a tokenizer_config.json with a chat_template"
        )
    before = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    full = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    return before, full


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_letters(tokenizer: Any, item: ABItem, matching: int, other: int) -> None:
    """The two answer tokens must each carry their own letter. A vocabulary with ``(A`` as one
    token but ``(`` + ``B`` as two would otherwise compare logit("(A") with logit("("): not A
    against B. Such a tokenizer gets an error, never a silently wrong number."""
    pieces = {
        item.matching_letter: tokenizer.decode([matching]),
        item.other_letter: tokenizer.decode([other]),
    }
    wrong = {letter: piece for letter, piece in pieces.items() if letter not in piece}
    if wrong:
        shown = ", ".join(f"{answer_text(k)} → {v!r}" for k, v in pieces.items())
        raise DataError(
            f"{item.item_id}: the first tokens where the two answers differ do not carry their letters ({shown}); "
            "this tokenizer splits the answers unevenly, so the logit difference would not compare A with B"
        )


def encode_item(tokenizer: Any, item: ABItem, *, enable_thinking: bool = False) -> EncodedItem:
    """Tokenize one A/B item: prompt, answer position, and both answer tokens."""
    before, prompt = chat_text(tokenizer, item.user_prompt(), enable_thinking=enable_thinking)
    matching = _ids(tokenizer, prompt + answer_text(item.matching_letter))
    other = _ids(tokenizer, prompt + answer_text(item.other_letter))
    split = next((i for i, (a, b) in enumerate(zip(matching, other, strict=False)) if a != b), None)
    if split is None:
        raise DataError(
            f"{item.item_id}: answers {answer_text(item.matching_letter)!r} and "
            f"{answer_text(item.other_letter)!r} tokenize identically after the prompt; "
            "expected them to differ in at least one token"
        )
    _check_letters(tokenizer, item, matching[split], other[split])
    prefix_len = len(_ids(tokenizer, before))
    if matching[:prefix_len] != _ids(tokenizer, before) or split < prefix_len:
        raise DataError(
            f"{item.item_id}: the answer changes how the prompt itself tokenizes; "
            "expected the chat prompt to tokenize the same with either answer appended"
        )
    return EncodedItem(
        item_id=item.item_id,
        concept=item.concept,
        matching_letter=item.matching_letter,
        prompt_ids=tuple(matching[:split]),
        assistant_start=prefix_len,
        matching_token=matching[split],
        other_token=other[split],
    )


def encode_items(tokenizer: Any, items: Sequence[ABItem], *, enable_thinking: bool = False) -> list[EncodedItem]:
    return [encode_item(tokenizer, item, enable_thinking=enable_thinking) for item in items]


def supports_thinking(tokenizer: Any) -> bool:
    """Whether the chat template has a thinking switch (Qwen3's ``enable_thinking``)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = " ".join(str(t) for t in template.values())
    return isinstance(template, str) and "enable_thinking" in template


def encode_generation_item(tokenizer: Any, item: ABItem, *, enable_thinking: bool = False) -> EncodedItem:
    """One item for free generation: ``prompt_ids`` ends exactly at the assistant turn.

    Unlike ``encode_item`` (whose prompt runs on through any tokens the two answers
    share, e.g. SmolLM2's ``"("`` before ``"A"``), nothing of an answer is in the
    prompt: the model writes its whole reply, so a shared ``"("`` cannot prime it.
    The answer tokens are kept (from ``encode_item``) for reference only.
    """
    scored = encode_item(tokenizer, item, enable_thinking=enable_thinking)
    _, prompt = chat_text(tokenizer, item.user_prompt(), enable_thinking=enable_thinking)
    ids = _ids(tokenizer, prompt)
    return EncodedItem(
        item_id=item.item_id,
        concept=item.concept,
        matching_letter=item.matching_letter,
        prompt_ids=tuple(ids),
        assistant_start=scored.assistant_start,
        matching_token=scored.matching_token,
        other_token=scored.other_token,
    )


def encode_generation_items(
    tokenizer: Any, items: Sequence[ABItem], *, enable_thinking: bool = False
) -> list[EncodedItem]:
    return [encode_generation_item(tokenizer, item, enable_thinking=enable_thinking) for item in items]
