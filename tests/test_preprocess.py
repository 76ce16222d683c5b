"""Preprocessing: parsing, drops, de-duplication, deterministic split, letter balance."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from remote_steer.data import preprocess as pp
from remote_steer.data.loading import RawItem, load_concept
from remote_steer.data.preprocess import ABItem, DropItem, parse_item, preprocess
from remote_steer.errors import DataError

REAL_DATA = Path(__file__).resolve().parents[2] / "shared/data/model-written-evals"
REAL_FILES = {
    "corrigibility": "corrigible-neutral-HHH.jsonl",
    "self-awareness": "self-awareness-general-ai.jsonl",
    "survival-instinct": "survival-instinct.jsonl",
    "power-seeking": "power-seeking-inclination.jsonl",
    "coordinate-other-versions": "coordinate-other-versions.jsonl",
}


def ab(body: str, a: str = "yes", b: str = "no") -> str:
    return f"{body}\n\nChoices:\n (A) {a}\n (B) {b}"


def raw(question: str, m: object = " (A)", nm: object = " (B)", line: int = 1, source: str = "d/set.jsonl") -> RawItem:
    return RawItem(question, m, nm, source, line)


def numbered(questions: list[str], matching: list[str] | None = None) -> list[RawItem]:
    """Raw items on lines 1..n of one file; matching letters default to all A."""
    matching = matching or ["A"] * len(questions)
    other = {"A": "B", "B": "A"}
    return [
        raw(q, f" ({m})", f" ({other[m]})", line=i + 1)
        for i, (q, m) in enumerate(zip(questions, matching, strict=True))
    ]


def hash_order(bodies: list[str], seed: int = 0) -> list[str]:
    # The documented order, written out independently of the implementation.
    return sorted(bodies, key=lambda b: hashlib.sha256(f"{seed}:{' '.join(b.split()).casefold()}".encode()).hexdigest())


def drop_reason(item: RawItem) -> str:
    with pytest.raises(DropItem) as exc:
        parse_item(item)
    return exc.value.reason


# --------------------------------------------------------------------------- parse_item


def test_parse_plain_item() -> None:
    assert parse_item(raw(ab("Is the sky blue?"))) == ("Is the sky blue?", ["yes", "no"], "A", "B")


@pytest.mark.parametrize(
    "question",
    [
        "Question: Is the sky blue?\n\nChoices:\n (A) yes\n (B) no\n\nAnswer:",
        "  Question:Is the sky blue?\nChoices:\n(A) yes\n(B) no\nAnswer:  \n",
        "question:   Is the sky blue?\n\nChoices:\n   (A) yes\n   (B) no\n\n answer:",
        "Is the sky blue?\n\nChoices:\n (A) yes\n (B) no\n\nAnswer:",
    ],
)
def test_wrappers_stripped(question: str) -> None:
    assert parse_item(raw(question)) == ("Is the sky blue?", ["yes", "no"], "A", "B")


def test_choice_text_continues_until_next_choice() -> None:
    q = "Pick.\n\nChoices:\n (A) first line\n  still first\n (B) second\n\n"
    body, choices, _, _ = parse_item(raw(q))
    assert body == "Pick."
    assert choices == ["first line\n  still first", "second"]


def test_choices_without_header_as_in_upstream_sycophancy() -> None:
    # sycophancy_on_philpapers2020 / political_typology_quiz have no "Choices:" line.
    q = (
        "Hello, I am a nominalist. What is your view on the following topic: Abstract objects"
        "\n (A) Platonism\n (B) nominalism\n\nAnswer:"
    )
    body, choices, m, o = parse_item(raw(q, " (B)", [" (A)"]))
    assert body == "Hello, I am a nominalist. What is your view on the following topic: Abstract objects"
    assert (choices, m, o) == (["Platonism", "nominalism"], "B", "A")
    three = "Which view?\n (A) one\n (B) two\n (C) three\n\nAnswer:"
    assert drop_reason(raw(three)) == pp.MORE_THAN_TWO


def test_last_choices_header_is_the_block() -> None:
    q = "Choices: matter.\nWhich?\n\nChoices:\n (A) x\n (B) y"
    assert parse_item(raw(q))[:2] == ("Choices: matter.\nWhich?", ["x", "y"])


@pytest.mark.parametrize(
    ("m", "nm", "letters"),
    [
        (" (A)", " (B)", ("A", "B")),
        ("(B)", "(A)", ("B", "A")),
        ("B", " A ", ("B", "A")),
        ([" (B)"], " (A)", ("B", "A")),
        (" (A)", (" (B)",), ("A", "B")),
    ],
)
def test_answer_forms_accepted(m: object, nm: object, letters: tuple[str, str]) -> None:
    assert parse_item(raw(ab("Q?"), m, nm))[2:] == letters


@pytest.mark.parametrize(
    ("question", "m", "nm", "reason"),
    [
        ("No block here (A) yes (B) no", " (A)", " (B)", pp.NO_CHOICES),
        ("Question: Yes or no?\n\nAnswer:", " (A)", " (B)", pp.NO_CHOICES),
        ("Q?\n\nChoices:\n (A) a\n (B) b\n (C) c", " (A)", " (B)", pp.MORE_THAN_TWO),
        ("Q?\n\nChoices:\n (A) only", " (A)", " (B)", pp.FEWER_THAN_TWO),
        ("Q?\n\nChoices:\nPick one\n (A) a\n (B) b", " (A)", " (B)", pp.MALFORMED_CHOICES),
        ("Q?\n\nChoices:\n (A) a\n (C) b", " (A)", " (C)", pp.MALFORMED_CHOICES),
        ("Q?\n\nChoices:\n (A) \n (B) b", " (A)", " (B)", pp.EMPTY_CHOICE),
        ("Question: \n\nChoices:\n (A) a\n (B) b", " (A)", " (B)", pp.EMPTY_QUESTION),
        (ab("Q?"), [" (A)", " (B)"], " (B)", pp.AMBIGUOUS_LIST),
        (ab("Q?"), " (A)", [], pp.AMBIGUOUS_LIST),
        (ab("Q?"), " yes", " (B)", pp.NOT_A_LETTER),
        (ab("Q?"), " (C)", " (A)", pp.LETTER_NOT_AMONG),
        (ab("Q?"), " (A)", " (A)", pp.SAME_ANSWER),
    ],
)
def test_drop_reasons(question: str, m: object, nm: object, reason: str) -> None:
    assert drop_reason(raw(question, m, nm)) == reason


# --------------------------------------------------------------------------- preprocess: counts


def test_report_counts_by_hand() -> None:
    good = [ab(f"Question number {i}?", f"yes {i}", f"no {i}") for i in range(6)]
    items = numbered(
        good
        + [
            "Q7?\n\nChoices:\n (A) a\n (B) b\n (C) c",  # more than two choices
            "Q8?\n\nChoices:\n (A) a\n (B) b\n (C) c\n (D) d",  # more than two choices
            ab("  question   NUMBER 0? ", "YES 0", "no  0"),  # duplicate of good[0], choices swapped
            "Q10? yes or no",  # no Choices block
        ]
    )
    split = preprocess(items, "toy")
    r = split.report
    assert (r.n_raw, r.n_kept) == (10, 6)
    assert r.dropped == {"more than two choices": 2, "duplicate": 1, "no Choices block": 1}
    assert r.n_raw == r.n_kept + sum(r.dropped.values())
    assert (r.n_test, r.n_train) == (3, 3)  # round(0.5 * 6) == 3
    assert r.matching_letters == {"train": {"A": 2, "B": 1}, "test": {"A": 2, "B": 1}}
    line = r.summary()
    assert "\n" not in line
    assert line.startswith("toy: 10 raw -> 6 kept (dropped: 2 more than two choices, 1 duplicate, 1 no Choices block)")
    assert "train 3 (A 2 / B 1), test 3 (A 2 / B 1)" in line


def test_duplicate_keeps_first_occurrence() -> None:
    items = numbered([ab("Same?", "x", "y"), ab("same? ", "Y", "X"), ab("Other?", "x", "y")])
    split = preprocess(items, "toy")
    ids = {i.item_id for i in split.train + split.test}
    assert ids == {"set:1", "set:3"}
    assert split.report.dropped == {"duplicate": 1}


def test_same_body_with_other_choices_is_not_a_duplicate() -> None:
    items = numbered([ab("Same?", "x", "y"), ab("Same?", "x", "z"), ab("Other?")])
    assert preprocess(items, "toy").report.n_kept == 3


def test_all_same_body_cannot_be_split() -> None:
    items = numbered([ab("Same?", "x", "y"), ab("Same?", "x", "z")])
    with pytest.raises(DataError, match="cannot split"):
        preprocess(items, "toy")


def test_too_few_items_is_a_data_error() -> None:
    items = numbered([ab("Only one?"), "Q?\n\nChoices:\n (A) a\n (B) b\n (C) c"])
    with pytest.raises(DataError, match=r"concept 'toy': only 1 usable .* 1 more than two choices"):
        preprocess(items, "toy")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"test_fraction": 0}, "test_fraction"),
        ({"test_fraction": 1}, "test_fraction"),
        ({"test_fraction": 1.5}, "test_fraction"),
        ({"test_fraction": float("nan")}, "test_fraction"),
        ({"test_fraction": True}, "test_fraction"),
        ({"max_items": 1}, "max_items"),
        ({"max_items": 0}, "max_items"),
        ({"max_items": 2.5}, "max_items"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_parameter_validation(kwargs: dict, param: str) -> None:
    items = numbered([ab(f"Q{i}?") for i in range(4)])
    with pytest.raises(DataError, match=rf"^{param}="):
        preprocess(items, "toy", **kwargs)


# --------------------------------------------------------------------------- preprocess: split and balance


def test_split_follows_seeded_hash_order() -> None:
    bodies = [f"Body {i}?" for i in range(10)]
    items = numbered([ab(b) for b in bodies])
    for seed in (0, 7):
        split = preprocess(items, "toy", seed=seed, test_fraction=0.3)
        order = hash_order(bodies, seed)
        assert [i.question for i in split.test] == order[:3]  # round(0.3 * 10) == 3
        assert [i.question for i in split.train] == order[3:]


def test_split_is_deterministic_and_independent_of_file_order() -> None:
    items = numbered([ab(f"Body {i}?", f"a{i}", f"b{i}") for i in range(21)], ["A", "B", "A"] * 7)
    first = preprocess(items, "toy", seed=3)
    shuffled = list(items)
    random.Random(1).shuffle(shuffled)
    assert preprocess(items, "toy", seed=3) == first
    assert preprocess(shuffled, "toy", seed=3) == first
    assert preprocess(items, "toy", seed=4).test != first.test


def test_split_is_disjoint() -> None:
    items = numbered([ab(f"Body {i}?") for i in range(15)])
    split = preprocess(items, "toy", test_fraction=0.4)
    train_ids = {i.item_id for i in split.train}
    test_ids = {i.item_id for i in split.test}
    assert not train_ids & test_ids
    assert len(train_ids | test_ids) == 15
    assert not {i.question for i in split.train} & {i.question for i in split.test}


def test_same_body_never_straddles_the_split() -> None:
    # Three bodies, two choice sets each: the natural cut at 3 would split a pair.
    items = numbered([ab(f"Body {k}?", "x", c) for k in range(3) for c in ("y", "z")])
    split = preprocess(items, "toy")
    assert (split.report.n_test, split.report.n_train) == (4, 2)
    assert not {i.question for i in split.train} & {i.question for i in split.test}


@pytest.mark.parametrize("n", [2, 3, 10, 11, 40])
def test_balance_is_50_50_within_each_split(n: int) -> None:
    # Unbalanced input: every item's matching answer is (A).
    items = numbered([ab(f"Body {i}?", f"match {i}", f"other {i}") for i in range(n)])
    split = preprocess(items, "toy")
    for part in (split.train, split.test):
        letters = [i.matching_letter for i in part]
        assert letters == ["A", "B"] * (len(part) // 2) + ["A"] * (len(part) % 2)
        assert abs(letters.count("A") - letters.count("B")) <= 1
    # Every item was (A), so exactly the B-targets were swapped.
    assert all(i.swapped == (i.matching_letter == "B") for i in split.train + split.test)


def test_swapping_preserves_the_matching_text() -> None:
    matching = ["A", "B", "B", "A", "B", "B", "B", "A", "B"]
    items = numbered([ab(f"Body {i}?", f"text A{i}", f"text B{i}") for i in range(9)], matching)
    original = {f"set:{i + 1}": (f"text {m}{i}", f"text {'B' if m == 'A' else 'A'}{i}") for i, m in enumerate(matching)}
    split = preprocess(items, "toy")
    for item in split.train + split.test:
        match_text, other_text = original[item.item_id]
        assert item.matching_choice == match_text
        assert item.not_matching_choice == other_text
        letter_text = {"A": item.choice_a, "B": item.choice_b}
        assert letter_text[item.matching_letter] == match_text
        assert letter_text[item.other_letter] == other_text


def test_max_items_takes_the_head_of_the_order() -> None:
    bodies = [f"Body {i}?" for i in range(10)]
    items = numbered([ab(b) for b in bodies])
    split = preprocess(items, "toy", max_items=4)
    order = hash_order(bodies)
    assert [i.question for i in split.test] == order[:2]
    assert [i.question for i in split.train] == order[2:4]
    assert split.report.n_kept == 10
    assert "using 4 (max_items)" in split.report.summary()


def test_tiny_split_keeps_both_sides_non_empty() -> None:
    split = preprocess(numbered([ab("One?"), ab("Two?")]), "toy", test_fraction=0.1)
    assert (split.report.n_test, split.report.n_train) == (1, 1)


def test_ab_item_prompt_and_ids() -> None:
    wrapped = "Question: Why?\n\nChoices:\n (A) because\n (B) no reason\n\nAnswer:"
    items = [
        raw(wrapped, " (B)", " (A)", line=12, source="x/y/my-file.jsonl"),
        raw(ab("Else?"), line=13, source="x/y/my-file.jsonl"),
    ]
    split = preprocess(items, "c")
    item = next(i for i in split.train + split.test if i.item_id == "my-file:12")
    assert item.concept == "c"
    assert item.question == "Why?"
    expected_prompt = f"Why?\n\nChoices:\n(A) {item.choice_a}\n(B) {item.choice_b}"
    assert item.user_prompt() == expected_prompt
    assert item.matching_choice == "no reason"
    assert ABItem("i", "c", "Q", "a", "b", "B", False).other_letter == "A"


def test_colliding_item_ids_are_rejected() -> None:
    items = [raw(ab("One?"), source="a/set.jsonl"), raw(ab("Two?"), source="b/set.jsonl")]
    with pytest.raises(DataError, match="item id set:1 is ambiguous"):
        preprocess(items, "toy")


# --------------------------------------------------------------------------- real data


def test_fixtures_preprocess_when_present() -> None:
    from remote_steer.data.loading import FIXTURES_ROOT, list_concepts

    if not FIXTURES_ROOT.is_dir():
        pytest.skip(f"{FIXTURES_ROOT} not present")
    rows = [r for r in list_concepts("fixtures") if r["available"]]
    if not rows:
        pytest.skip("no concept files in the fixtures yet")
    for row in rows:
        raw_items = load_concept(row["concept"], "fixtures")
        split = preprocess(raw_items, row["concept"], seed=0)
        assert split == preprocess(raw_items, row["concept"], seed=0)
        assert split.report.n_kept + sum(split.report.dropped.values()) == len(raw_items)
        for part in (split.train, split.test):
            a = sum(i.matching_letter == "A" for i in part)
            assert abs(a - (len(part) - a)) <= 1
        assert not {i.question for i in split.train} & {i.question for i in split.test}


def _real(concept: str) -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"{REAL_DATA} not present")
    return REAL_DATA / "advanced-ai-risk/human_generated_evals" / REAL_FILES[concept]


def _independent_multi_choice_count(path: Path) -> int:
    # Simpler method than the parser: a third choice always appears as "\n (C)".
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum("\n (C)" in obj["question"] for obj in lines)


@pytest.mark.parametrize("concept", list(REAL_FILES))
def test_real_file(concept: str) -> None:
    path = _real(concept)
    raw_items = load_concept(concept, REAL_DATA)
    split = preprocess(raw_items, concept, seed=0)
    r = split.report
    assert r.n_raw == len(raw_items)
    assert r.dropped.get(pp.MORE_THAN_TWO, 0) == _independent_multi_choice_count(path)
    assert r.n_kept + sum(r.dropped.values()) == r.n_raw
    assert r.n_train + r.n_test == r.n_kept
    for part, name in ((split.train, "train"), (split.test, "test")):
        counts = r.matching_letters[name]
        assert abs(counts["A"] - counts["B"]) <= 1
        assert counts["A"] + counts["B"] == len(part)
    assert preprocess(raw_items, concept, seed=0) == split  # same split on a second call
    assert not {i.item_id for i in split.train} & {i.item_id for i in split.test}
    by_id = {f"{Path(x.source).stem}:{x.line}": x for x in raw_items}
    for item in split.train + split.test:
        assert not item.question.startswith("Question:") and "Answer:" not in item.question
        # The matching text is the one the source labelled as matching.
        source = by_id[item.item_id]
        letter = source.answer_matching.strip()
        assert re.search(re.escape(letter) + r"[ \t]*" + re.escape(item.matching_choice), source.question)


def test_real_split_is_pinned() -> None:
    # Golden values: the split must not drift across machines, Python versions or refactors.
    _real("corrigibility")
    split = preprocess(load_concept("corrigibility", REAL_DATA), "corrigibility", seed=0)
    assert [i.item_id for i in split.test[:3]] == [f"corrigible-neutral-HHH:{n}" for n in (309, 150, 174)]
    assert [i.item_id for i in split.train[:3]] == [f"corrigible-neutral-HHH:{n}" for n in (228, 238, 168)]
    assert [i.swapped for i in split.test[:3]] == [True, False, True]


def test_real_unbalanced_file_gets_balanced() -> None:
    _real("survival-instinct")
    raw_items = load_concept("survival-instinct", REAL_DATA)
    kept_letters = [parse_item(x)[2] for x in raw_items if "\n (C)" not in x.question]
    assert kept_letters.count("A") > kept_letters.count("B") + 50  # the input really is skewed
    split = preprocess(raw_items, "survival-instinct", seed=1)
    for part in (split.train, split.test):
        a = sum(i.matching_letter == "A" for i in part)
        assert abs(a - (len(part) - a)) <= 1
