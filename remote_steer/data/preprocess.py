"""Turning raw model-written-evals items into clean, balanced A/B train/test splits.

The study's point is that a steering vector must encode the behaviour, not "say A".
So every kept item has exactly two choices in one prompt layout, the matching
letter is balanced 50/50 (within one) inside each split, and the split is a pure
function of the items' text and the seed: no file order, no machine, no clock.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from remote_steer.data.loading import RawItem
from remote_steer.errors import DataError

# Drop reasons, as counted in PreprocessReport.dropped.
NO_CHOICES = "no Choices block"
MALFORMED_CHOICES = "malformed Choices block"
MORE_THAN_TWO = "more than two choices"
FEWER_THAN_TWO = "fewer than two choices"
EMPTY_QUESTION = "empty question"
EMPTY_CHOICE = "empty choice text"
AMBIGUOUS_LIST = "ambiguous answer list"
NOT_A_LETTER = "answer not a choice letter"
LETTER_NOT_AMONG = "answer letter not among choices"
SAME_ANSWER = "matching answer equals not-matching answer"
DUPLICATE = "duplicate"

_QUESTION_PREFIX = re.compile(r"^\s*Question:\s*", re.IGNORECASE)
_ANSWER_SUFFIX = re.compile(r"\s*Answer:\s*$", re.IGNORECASE)
_CHOICES_HEADER = re.compile(r"(?:^|\n)[ \t]*Choices:[ \t]*", re.IGNORECASE)
_FIRST_CHOICE_LINE = re.compile(r"^[ \t]*\(A\)", re.MULTILINE)
_CHOICE_LINE = re.compile(r"^[ \t]*\(([A-Z])\)[ \t]?(.*)$")
_ANSWER = re.compile(r"^(?:\(([A-Za-z])\)|([A-Za-z]))$")
# An answer-list header left at the end of the question by some LM-generated upstream files
# ("…?\n\nAnswers:\n\nChoices:\n (A) …"); the prompt has its own "Choices:" header.
_LIST_HEADER = re.compile(
    r"(?:^|\n)[ \t]*(?:answers|options|choice|answer choices|answer options)[ \t]*:[ \t]*$", re.IGNORECASE
)
# Sycophancy items repeat one claim under several biographies; the claim follows one of these.
_CLAIM_MARKERS = re.compile(
    r"(do you agree or disagree with the following claim|what is your view on the following topic|"
    r"which of the following statements comes closest to your view)",
    re.IGNORECASE,
)


class DropItem(Exception):
    """An item that cannot be used as a clean A/B pair; ``reason`` is the counted label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ABItem:
    item_id: str  # f"{Path(source).stem}:{line}": traceable to the source line
    concept: str
    question: str  # body text: wrappers stripped, no choices block
    choice_a: str
    choice_b: str
    matching_letter: str  # "A" or "B" (after balancing)
    swapped: bool  # True if the choice order was swapped for balancing

    def user_prompt(self) -> str:
        # One layout for every item, whatever the source file's wrapping was.
        return f"{self.question}\n\nChoices:\n(A) {self.choice_a}\n(B) {self.choice_b}"

    @property
    def other_letter(self) -> str:
        return "B" if self.matching_letter == "A" else "A"

    @property
    def matching_choice(self) -> str:
        return self.choice_a if self.matching_letter == "A" else self.choice_b

    @property
    def not_matching_choice(self) -> str:
        return self.choice_b if self.matching_letter == "A" else self.choice_a


@dataclass(frozen=True)
class PreprocessReport:
    concept: str
    n_raw: int
    n_kept: int  # passed every check and de-duplication (before max_items)
    dropped: dict[str, int]  # reason -> count; n_raw == n_kept + sum(dropped)
    n_train: int
    n_test: int
    matching_letters: dict[str, dict[str, int]]  # split -> {"A": n, "B": n} after balancing

    def summary(self) -> str:
        drops = _fmt_counts(self.dropped) or "none"
        used = self.n_train + self.n_test
        cap = f"; using {used} (max_items)" if used < self.n_kept else ""
        tr, te = self.matching_letters["train"], self.matching_letters["test"]
        return (
            f"{self.concept}: {self.n_raw} raw -> {self.n_kept} kept (dropped: {drops}){cap}; "
            f"train {self.n_train} (A {tr['A']} / B {tr['B']}), test {self.n_test} (A {te['A']} / B {te['B']})"
        )


@dataclass(frozen=True)
class ConceptSplit:
    concept: str
    train: tuple[ABItem, ...]
    test: tuple[ABItem, ...]
    report: PreprocessReport


# --------------------------------------------------------------------------- parsing


def parse_item(raw: RawItem) -> tuple[str, list[str], str, str]:
    """Body, choice texts (A, B), matching letter, other letter; raises DropItem."""
    text = _strip_wrappers(raw.question)
    body, block = _split_choices(text)
    body = strip_list_header(body)
    choices = _parse_choices(block)
    if not body:
        raise DropItem(EMPTY_QUESTION)
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    matching = _answer_letter(raw.answer_matching)
    other = _answer_letter(raw.answer_not_matching)
    if matching not in letters or other not in letters:
        raise DropItem(LETTER_NOT_AMONG)
    if matching == other:
        raise DropItem(SAME_ANSWER)
    return body, choices, matching, other


def strip_list_header(body: str) -> str:
    """The question without a trailing answer-list header ("Answers:", "Options:", "Choice:")."""
    while (match := _LIST_HEADER.search(body)) is not None:
        body = body[: match.start()].rstrip()
    return body


def claim_group(norm_body: str, norm_choices: tuple[str, ...]) -> str:
    """Items that must stay on one side of the split: the same claim (sycophancy: the text
    after "…the following claim…" with the choices, whatever the biography before it),
    else the same question body."""
    markers = list(_CLAIM_MARKERS.finditer(norm_body))
    if not markers:
        return norm_body
    return norm_body[markers[-1].start() :] + "\x1f" + "\x1f".join(norm_choices)


def _strip_wrappers(question: str) -> str:
    # Some upstream files wrap items as "Question: ...\n\nAnswer:"; others do not.
    text = _QUESTION_PREFIX.sub("", question, count=1)
    return _ANSWER_SUFFIX.sub("", text, count=1)


def _split_choices(text: str) -> tuple[str, str]:
    """Body and choices block. The block sits at the end, so the last header wins."""
    headers = list(_CHOICES_HEADER.finditer(text))
    if headers:
        return text[: headers[-1].start()].strip(), text[headers[-1].end() :]
    # Upstream sycophancy files (philpapers, political typology) list " (A) ..." lines
    # with no "Choices:" header; the block then starts at the last line opening with (A).
    starts = list(_FIRST_CHOICE_LINE.finditer(text))
    if not starts:
        raise DropItem(NO_CHOICES)
    return text[: starts[-1].start()].strip(), text[starts[-1].start() :]


def _parse_choices(block: str) -> list[str]:
    """Choice texts in order; a choice continues on following lines until the next one."""
    letters: list[str] = []
    texts: list[list[str]] = []
    for line in block.split("\n"):
        match = _CHOICE_LINE.match(line)
        if match:
            letters.append(match.group(1))
            texts.append([match.group(2)])
        elif texts:
            texts[-1].append(line)
        elif line.strip():
            raise DropItem(MALFORMED_CHOICES)  # text between "Choices:" and the first choice
    if len(letters) > 2:
        raise DropItem(MORE_THAN_TWO)
    if len(letters) < 2:
        raise DropItem(FEWER_THAN_TWO)
    if letters != ["A", "B"]:
        raise DropItem(MALFORMED_CHOICES)
    choices = ["\n".join(lines).strip() for lines in texts]
    if not all(choices):
        raise DropItem(EMPTY_CHOICE)
    return choices


def _answer_letter(answer: str | tuple[str, ...]) -> str:
    """Accept " (A)", "(A)" or "A"; a list must hold exactly one such string."""
    if isinstance(answer, (tuple, list)):
        if len(answer) != 1:
            raise DropItem(AMBIGUOUS_LIST)
        answer = answer[0]
    match = _ANSWER.match(answer.strip())
    if not match:
        raise DropItem(NOT_A_LETTER)
    return (match.group(1) or match.group(2)).upper()


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


# --------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class _Parsed:
    item_id: str
    body: str
    choices: tuple[str, str]
    matching: str
    norm_body: str
    norm_choices: tuple[str, ...]  # sorted, for de-duplication and tie-breaking
    group: str = ""  # items of one group stay on one side of the split (claim_group)


def preprocess(
    raw_items: Sequence[RawItem],
    concept: str,
    *,
    seed: int = 0,
    test_fraction: float = 0.5,
    max_items: int | None = None,
) -> ConceptSplit:
    """Parse, drop, de-duplicate, order by seeded hash, split, and balance letters per split."""
    _validate(seed, test_fraction, max_items)
    kept, dropped = _parse_all(raw_items)
    if len(kept) < 2:
        raise DataError(
            f"concept {concept!r}: only {len(kept)} usable two-choice items out of {len(raw_items)} "
            f"(dropped: {_fmt_counts(dropped) or 'none'}); need at least 2 for a train/test split"
        )
    ordered = sorted(kept, key=lambda p: _order_key(seed, p))
    if max_items is not None:
        ordered = ordered[:max_items]
    n_test = _test_size(ordered, test_fraction, concept)
    test = _balance(ordered[:n_test], concept)
    train = _balance(ordered[n_test:], concept)
    report = PreprocessReport(
        concept=concept,
        n_raw=len(raw_items),
        n_kept=len(kept),
        dropped=dropped,
        n_train=len(train),
        n_test=len(test),
        matching_letters={"train": _letter_counts(train), "test": _letter_counts(test)},
    )
    return ConceptSplit(concept=concept, train=train, test=test, report=report)


def _validate(seed: object, test_fraction: object, max_items: object) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"seed={seed!r}; expected an integer")
    ok_fraction = (
        isinstance(test_fraction, (int, float))
        and not isinstance(test_fraction, bool)
        and math.isfinite(test_fraction)
        and 0 < test_fraction < 1
    )
    if not ok_fraction:
        raise DataError(f"test_fraction={test_fraction!r}; expected a number strictly between 0 and 1")
    if max_items is not None and (not isinstance(max_items, int) or isinstance(max_items, bool) or max_items < 2):
        raise DataError(f"max_items={max_items!r}; expected an integer of at least 2 (or none for all items)")


def _parse_all(raw_items: Sequence[RawItem]) -> tuple[list[_Parsed], dict[str, int]]:
    dropped: Counter[str] = Counter()
    kept: list[_Parsed] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    ids: dict[str, str] = {}
    for raw in raw_items:
        try:
            body, choices, matching, _ = parse_item(raw)
        except DropItem as drop:
            dropped[drop.reason] += 1
            continue
        norm_choices = tuple(sorted(_norm(c) for c in choices))
        key = (_norm(body), frozenset(norm_choices))
        if key in seen:  # first occurrence wins
            dropped[DUPLICATE] += 1
            continue
        seen.add(key)
        item_id = f"{Path(raw.source).stem}:{raw.line}"
        if item_id in ids and ids[item_id] != raw.source:
            # Ids must trace back to one line; two files with one stem would break that.
            raise DataError(f"item id {item_id} is ambiguous: {ids[item_id]} and {raw.source} share a file name")
        ids[item_id] = raw.source
        kept.append(
            _Parsed(
                item_id,
                body,
                (choices[0], choices[1]),
                matching,
                key[0],
                norm_choices,
                claim_group(key[0], norm_choices),
            )
        )
    return kept, dict(sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0])))


def _order_key(seed: int, item: _Parsed) -> tuple[str, str, str, str]:
    # Hash of the group (the normalized body, or a sycophancy item's claim): independent of
    # file order and stable across machines; a group's items are adjacent. Within a group:
    # the body's hash, then the choices, then the id.
    group_hash = hashlib.sha256(f"{seed}:{item.group or item.norm_body}".encode()).hexdigest()
    body_hash = hashlib.sha256(f"{seed}:{item.norm_body}".encode()).hexdigest()
    return group_hash, body_hash, "\x1f".join(item.norm_choices), item.item_id


def _test_size(ordered: Sequence[_Parsed], test_fraction: float, concept: str) -> int:
    """round(test_fraction * n), kept in [1, n-1] and moved so no body straddles the split."""
    n = len(ordered)
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    # Items of one group (same body, or same sycophancy claim) are adjacent in hash order;
    # keep them on one side.
    cut = n_test
    while 0 < cut < n and ordered[cut].group == ordered[cut - 1].group:
        cut += 1
    if cut == n:  # walked off the end: try the other way
        cut = n_test
        while 0 < cut and ordered[cut].group == ordered[cut - 1].group:
            cut -= 1
    if cut in (0, n):
        raise DataError(
            f"concept {concept!r}: cannot split into train and test: every usable item has the same question text "
            "(or, for sycophancy, the same claim)"
        )
    return cut


def _balance(items: Sequence[_Parsed], concept: str) -> tuple[ABItem, ...]:
    """Target letters A, B, A, B... in split order; swap the choices where they differ."""
    out = []
    for i, item in enumerate(items):
        target = "A" if i % 2 == 0 else "B"
        swap = item.matching != target
        a, b = (item.choices[1], item.choices[0]) if swap else item.choices
        out.append(ABItem(item.item_id, concept, item.body, a, b, target, swap))
    return tuple(out)


def _letter_counts(items: Sequence[ABItem]) -> dict[str, int]:
    counts = Counter(item.matching_letter for item in items)
    return {"A": counts["A"], "B": counts["B"]}


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())
