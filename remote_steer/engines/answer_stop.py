"""When a generated answer is finished: end of turn, or the answer is decided.

Every generation engine (plain, fast, remote, the benchmark's baselines) cuts its
rows with the same ``StopRule``, so their outputs can be compared token for token.
The rule works on token ids only (the fast engine applies it on the server, where
no tokenizer runs), from flags computed once per tokenizer:

- **end of turn**: the generation config's eos ids, the tokenizer's eos and pad
  (``<|im_end|>`` for Qwen3). The row stops *before* this token.
- **thinking**: with thinking on, the row is in its thought until a token whose
  text contains ``</think>``; nothing in the thought decides anything.
- **answer decided**: in the answer (after ``</think>``, or from the start with
  thinking off), the row stops *after* the first token whose text contains ``)``:
  the closing parenthesis of ``(A)`` or ``A)`` ("The answer is (B)", ``"("`` +
  ``"A"`` + ``")"`` for SmolLM2's tokenizer), or after ``answer_tokens`` answer
  tokens, whichever comes first; ``parsing.parse_answer`` then reads that text.
- **budget**: ``max_new_tokens`` in all (thought included). A thought still open
  at the budget is an unfinished thought: invalid for the parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

STOP = 1  # end of turn: the row stops before this token
THINK_CLOSE = 2  # the thought ends with this token
DECIDES = 4  # in the answer, this token closes a letter: the row stops after it

END_OF_TURN = "end of turn"
DECIDED = "answer decided"
ANSWER_BUDGET = "answer budget"
BUDGET = "token budget"


@dataclass(frozen=True)
class StopRule:
    flags: torch.Tensor  # [vocab] int8, STOP | THINK_CLOSE | DECIDES bits
    thinking: bool  # the row starts inside a thought
    answer_tokens: int = 16  # answer tokens after which the answer counts as given

    def state(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial (in_answer [rows] bool, answer_count [rows] long)."""
        return (torch.full((rows,), not self.thinking, dtype=torch.bool), torch.zeros(rows, dtype=torch.long))


def stop_token_ids(hf_model: Any, tokenizer: Any) -> frozenset[int]:
    """The generation config's eos ids, the tokenizer's eos and pad."""
    ids: set[int] = set()
    config = getattr(hf_model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is not None:
        ids.update([int(eos)] if isinstance(eos, int) else (int(e) for e in eos))
    for token in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if token is not None:
            ids.add(int(token))
    return frozenset(ids)


_FLAG_CACHE: dict[tuple[int, int], torch.Tensor] = {}


def token_flags(tokenizer: Any, vocab_size: int, stop_ids: frozenset[int]) -> torch.Tensor:
    """[vocab_size] int8 flags of every token id (cached per tokenizer object)."""
    key = (id(tokenizer), vocab_size)
    cached = _FLAG_CACHE.get(key)
    if cached is None:
        n = min(vocab_size, len(tokenizer))
        texts = tokenizer.convert_ids_to_tokens(list(range(n)))
        flags = torch.zeros(vocab_size, dtype=torch.int8)
        for i, token in enumerate(texts):
            if token is None:
                continue
            if "</think>" in token:
                flags[i] |= THINK_CLOSE
            elif ")" in token:
                flags[i] |= DECIDES
        cached = flags
        _FLAG_CACHE[key] = cached
    flags = cached.clone()
    for i in stop_ids:
        if 0 <= i < vocab_size:
            flags[i] = STOP
    return flags


def make_stop_rule(model: Any, thinking: bool, answer_tokens: int = 16) -> StopRule:
    """The rule for a ``LoadedModel`` (its tokenizer, generation config and vocabulary)."""
    hf = model.nn._module
    vocab = int(hf.get_output_embeddings().weight.shape[0])
    stop = stop_token_ids(hf, model.tokenizer)
    return StopRule(token_flags(model.tokenizer, vocab, stop), thinking, answer_tokens)


def free_answer_rule(model: Any, thinking: bool = False) -> StopRule:
    """The rule for a free answer (``remote-steer generate``: a question of the user's, not
    an A/B item): only end of turn or the token budget stop it; a ``)`` decides nothing."""
    rule = make_stop_rule(model, thinking)
    return StopRule(rule.flags & ~DECIDES, thinking, answer_tokens=2**31 - 1)


def step(
    rule_flags: torch.Tensor, tokens: torch.Tensor, in_answer: torch.Tensor, count: torch.Tensor, answer_tokens: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decode step for a batch of rows: (keep [rows] bool, done [rows] bool, in_answer, count).

    ``keep``: the token belongs to the output (False for an end-of-turn token).
    ``done``: the row is finished after this token. Pure tensor code (runs on the server).
    """
    f = rule_flags.to(tokens.device)[tokens].long()
    stop = (f & STOP) > 0
    closes = (f & THINK_CLOSE) > 0
    was_answer = in_answer.to(tokens.device)
    count = count.to(tokens.device) + was_answer.long()
    decided = was_answer & ((f & DECIDES) > 0)
    done = stop | decided | (was_answer & (count >= answer_tokens))
    in_answer = was_answer | closes
    return ~stop, done, in_answer, count


def cut(ids: Sequence[int], rule: StopRule) -> tuple[tuple[int, ...], str]:
    """The ids a row keeps and why it ended (applied to a full, uncut greedy row).

    The same decisions as ``step``, in plain Python for one row.
    """
    ids = [int(t) for t in ids]
    flags = rule.flags[torch.tensor(ids, dtype=torch.long)].tolist() if ids else []
    in_answer, count = not rule.thinking, 0
    for n, f in enumerate(flags):  # flags[n] belongs to ids[n]
        if f & STOP:
            return tuple(ids[:n]), END_OF_TURN
        if in_answer:
            count += 1
            if f & DECIDES:
                return tuple(ids[: n + 1]), DECIDED
            if count >= rule.answer_tokens:
                return tuple(ids[: n + 1]), ANSWER_BUDGET
        if f & THINK_CLOSE:
            in_answer = True
    return tuple(ids), BUDGET
