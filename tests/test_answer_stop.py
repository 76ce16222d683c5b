"""The stop rule on hand-built flags: end of turn, thinking, answer decided, budgets."""

from __future__ import annotations

import torch

from remote_steer.engines import answer_stop as S

# token ids of a made-up vocabulary
EOS, THINK_END, OPEN, LETTER, CLOSE, WORD, OPEN_LETTER_CLOSE = 0, 1, 2, 3, 4, 5, 6


def _rule(thinking, answer_tokens=16):
    flags = torch.zeros(8, dtype=torch.int8)
    flags[EOS] = S.STOP
    flags[THINK_END] = S.THINK_CLOSE
    flags[CLOSE] = S.DECIDES
    flags[OPEN_LETTER_CLOSE] = S.DECIDES
    return S.StopRule(flags, thinking, answer_tokens)


def test_thinking_off_stops_after_the_closing_parenthesis():
    assert S.cut([OPEN, LETTER, CLOSE, WORD, WORD], _rule(False)) == ((OPEN, LETTER, CLOSE), S.DECIDED)
    assert S.cut([OPEN_LETTER_CLOSE, WORD], _rule(False)) == ((OPEN_LETTER_CLOSE,), S.DECIDED)
    assert S.cut([WORD, EOS, WORD], _rule(False)) == ((WORD,), S.END_OF_TURN)
    assert S.cut([WORD] * 5, _rule(False, answer_tokens=3)) == ((WORD,) * 3, S.ANSWER_BUDGET)
    assert S.cut([WORD] * 2, _rule(False)) == ((WORD,) * 2, S.BUDGET)


def test_thinking_on_ignores_parentheses_inside_the_thought():
    ids = [WORD, OPEN, LETTER, CLOSE, WORD, THINK_END, WORD, OPEN, LETTER, CLOSE, WORD]
    assert S.cut(ids, _rule(True)) == (tuple(ids[:10]), S.DECIDED)
    # an unfinished thought runs to the budget (the parser calls it invalid)
    assert S.cut([WORD, CLOSE, WORD], _rule(True)) == ((WORD, CLOSE, WORD), S.BUDGET)


def test_batched_step_matches_cut():
    rule = _rule(True, answer_tokens=4)
    rows = [
        [WORD, THINK_END, OPEN, LETTER, CLOSE, WORD],
        [THINK_END, WORD, WORD, WORD, WORD, WORD],
        [WORD, EOS, WORD, WORD, WORD, WORD],
        [WORD] * 6,
    ]
    in_answer, count = rule.state(len(rows))
    finished = [None] * len(rows)
    for t in range(6):
        tokens = torch.tensor([r[t] for r in rows])
        keep, done, in_answer, count = S.step(rule.flags, tokens, in_answer, count, rule.answer_tokens)
        for r in range(len(rows)):
            if finished[r] is None and bool(done[r]):
                finished[r] = tuple(rows[r][: t + int(bool(keep[r]))])
    for r, row in enumerate(rows):
        want = S.cut(row, rule)[0]
        assert (finished[r] or tuple(row)) == want
