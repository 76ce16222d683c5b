"""Letter collapse: when steering moves the answer *letter*, not the behaviour.

The logit diff is logit(matching) − logit(other). Items are balanced 50/50 on
which letter matches the behaviour, so a vector that merely makes the model
prefer "A" raises the logit diff of the A-matching items and lowers it on the
B-matching ones: the mean cancels, the items move "against the vector" in
numbers, and on an unbalanced subset (one dataset, a few items) it can pass for
an effect. Seen on SmolLM2-135M-Instruct: at ±16 *both* signs raise
logit(A) − logit(B).

Per cell (model × dataset × layer × strength), from the saved results alone:

- ``effect_A`` / ``effect_B``: mean change of the logit diff over items whose
  matching letter is A / B (the per-letter effects). A behaviour effect moves both
  the same way; a letter effect moves them in opposite directions.
- ``behaviour_shift`` = (effect_A + effect_B) / 2 and ``letter_shift`` = mean change
  of the letter gap logit(A) − logit(B) (= (effect_A − effect_B) / 2 when balanced),
  with ``letter_t``, the letter shift over its standard error across items.

Flags (``collapse``, with the reason in ``collapse_rule``):

1. **same letter both ways**: at +s and −s (same model, dataset, layer and |s|) the
   letter gap moves in the same direction, each shift at least ``min_t`` standard
   errors from zero and at least as large as that cell's behaviour shift. Both
   cells of the pair are flagged.
2. **letter control** (when a control table is given): an A-minus-B direction
   rescaled to the vector's norm at that layer (``letter_control_shift``, the letter
   gap change it causes at the same strength) moves the letter gap no more than
   the vector itself does, and the vector's letter shift is at least ``min_t``
   standard errors from zero: the vector is, as far as the letters go, as much a
   letter direction as the letter direction.

This module imports no torch: it reads result tables only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CELL = ["model", "dataset", "layer", "strength"]
LETTER_COLUMNS = [
    *CELL,
    "n_items",
    "n_A",
    "n_B",
    "effect_A",
    "effect_B",
    "behaviour_shift",
    "letter_shift",
    "letter_t",
    "letter_control_shift",
    "collapse",
    "collapse_rule",
]


def letter_gaps(results: pd.DataFrame) -> pd.DataFrame:
    """Per row: the change of the logit diff and of the letter gap logit(A) − logit(B)."""
    frame = results.copy()
    sign = np.where(frame["matching_letter"].astype(str) == "A", 1.0, -1.0)
    frame["diff_change"] = frame["logit_diff"] - frame["baseline_logit_diff"]
    frame["letter_change"] = sign * frame["diff_change"]
    return frame


def _t(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan")
    se = values.std(ddof=1) / np.sqrt(len(values))
    mean = values.mean()
    if se == 0:
        return float("inf") * np.sign(mean) if mean != 0 else 0.0
    return float(mean / se)


def letter_effects(
    results: pd.DataFrame,
    control: pd.DataFrame | None = None,
    min_t: float = 2.0,
) -> pd.DataFrame:
    """One row per cell: per-letter effects, letter and behaviour shifts, and the flag.

    ``results`` is ``results/logit_diff.parquet`` (needs ``matching_letter``).
    ``control`` (optional) has columns model, dataset, layer, strength and
    ``letter_control_shift``: the mean letter-gap change an A-minus-B direction of
    the vector's norm causes in that cell.
    """
    if results.empty or "matching_letter" not in results:
        return pd.DataFrame(columns=LETTER_COLUMNS)
    frame = letter_gaps(results)
    rows = []
    for key, cell in frame.groupby(CELL, sort=True):
        by_letter = cell.groupby(cell["matching_letter"].astype(str))["diff_change"]
        means = by_letter.mean()
        counts = by_letter.size()
        effect_a = float(means.get("A", np.nan))
        effect_b = float(means.get("B", np.nan))
        rows.append(
            {
                **dict(zip(CELL, key, strict=True)),
                "n_items": int(len(cell)),
                "n_A": int(counts.get("A", 0)),
                "n_B": int(counts.get("B", 0)),
                "effect_A": effect_a,
                "effect_B": effect_b,
                "behaviour_shift": float(np.nanmean([effect_a, effect_b])),
                "letter_shift": float(cell["letter_change"].mean()),
                "letter_t": _t(cell["letter_change"].to_numpy(dtype=float)),
            }
        )
    table = pd.DataFrame(rows)
    if control is not None and not control.empty:
        table = table.merge(control[[*CELL, "letter_control_shift"]], on=CELL, how="left")
    else:
        table["letter_control_shift"] = np.nan
    table["collapse"] = False
    table["collapse_rule"] = ""
    _flag_both_ways(table, min_t)
    _flag_control(table, min_t)
    return table[LETTER_COLUMNS]


def _material(row: pd.Series, min_t: float) -> bool:
    return (
        np.isfinite(row["letter_t"])
        and abs(row["letter_t"]) >= min_t
        and abs(row["letter_shift"]) >= abs(row["behaviour_shift"])
    )


def _add_rule(table: pd.DataFrame, index, rule: str) -> None:
    table.loc[index, "collapse"] = True
    current = table.loc[index, "collapse_rule"]
    table.loc[index, "collapse_rule"] = f"{current}; {rule}" if current else rule


def _flag_both_ways(table: pd.DataFrame, min_t: float) -> None:
    keyed = {tuple(r[c] for c in CELL): i for i, r in table.iterrows()}
    for i, row in table.iterrows():
        if row["strength"] <= 0:
            continue
        j = keyed.get((row["model"], row["dataset"], row["layer"], -row["strength"]))
        if j is None:
            continue
        other = table.loc[j]
        same_way = np.sign(row["letter_shift"]) == np.sign(other["letter_shift"]) != 0
        if same_way and _material(row, min_t) and _material(other, min_t):
            letter = "A" if row["letter_shift"] > 0 else "B"
            rule = f"both signs → {letter}"
            _add_rule(table, i, rule)
            _add_rule(table, j, rule)


def _flag_control(table: pd.DataFrame, min_t: float) -> None:
    for i, row in table.iterrows():
        control = row["letter_control_shift"]
        if not np.isfinite(control) or not np.isfinite(row["letter_t"]) or abs(row["letter_t"]) < min_t:
            continue
        if abs(row["letter_shift"]) >= abs(control):
            _add_rule(table, i, "≥ A−B dir.")


def collapse_summary(letters: pd.DataFrame) -> pd.DataFrame:
    """Flagged cells only, for the closing table and the report."""
    if letters.empty:
        return letters
    return letters[letters["collapse"]].reset_index(drop=True)


def collapse_verdict(letters: pd.DataFrame, best: pd.DataFrame | None = None) -> str:
    """One sentence: how many cells collapse, and whether any best-layer cell does."""
    if letters.empty:
        return "letter collapse: no results to check"
    flagged = letters[letters["collapse"]]
    text = f"letter collapse: {len(flagged)} of {len(letters)} cells flagged"
    if flagged.empty:
        return text + " (steering moves behaviour, not just the answer letter, wherever it moves anything)"
    strengths = sorted({abs(float(s)) for s in flagged["strength"]})
    text += f" (at |strength| {', '.join(f'{s:g}' for s in strengths)})"
    if best is not None and not best.empty and "best_layer" in best:
        hits = []
        for r in best.itertuples():
            mask = (
                (flagged["model"] == r.model) & (flagged["dataset"] == r.dataset) & (flagged["layer"] == r.best_layer)
            )
            if mask.any():
                hits.append(f"{r.model}/{r.dataset}")
        if hits:
            text += f"; best-layer cells affected: {', '.join(hits)}"
    return text


def best_layer_letters(letters: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset, at its best layer and the strongest ± strengths: the
    per-letter effects and a reading: "letter collapse" (flagged), "both letters
    follow the vector" (A- and B-matching items move with the sign of the strength
    at both signs) or "letters disagree"."""
    if letters.empty or best is None or best.empty:
        return pd.DataFrame()
    rows = []
    for r in best.itertuples():
        cells = letters[
            (letters["model"] == r.model) & (letters["dataset"] == r.dataset) & (letters["layer"] == r.best_layer)
        ]
        pos = cells[cells["strength"] == r.pos_strength]
        neg = cells[cells["strength"] == r.neg_strength]
        if pos.empty or neg.empty:
            continue
        p, n = pos.iloc[0], neg.iloc[0]
        follows = all(
            np.sign(cell[e]) == np.sign(cell["strength"]) for cell in (p, n) for e in ("effect_A", "effect_B")
        )
        if p["collapse"] or n["collapse"]:
            reading = "letter collapse"
        elif follows:
            reading = "both letters follow the vector"
        else:
            reading = "letters disagree"
        rows.append(
            {
                "model": r.model,
                "dataset": r.dataset,
                "layer": int(r.best_layer),
                "pos_strength": float(r.pos_strength),
                "neg_strength": float(r.neg_strength),
                "pos_effect_A": p["effect_A"],
                "pos_effect_B": p["effect_B"],
                "neg_effect_A": n["effect_A"],
                "neg_effect_B": n["effect_B"],
                "pos_letter_shift": p["letter_shift"],
                "neg_letter_shift": n["letter_shift"],
                "reading": reading,
            }
        )
    return pd.DataFrame(rows)


def with_controls(per_best: pd.DataFrame, comparison: pd.DataFrame | None) -> pd.DataFrame:
    """``best_layer_letters`` plus the controls' word on each best-layer cell.

    ``comparison`` is ``analysis.controls.compare`` (real vector against random and
    shuffled-label vectors per configuration; None or empty without controls). Adds
    ``pos_controls`` / ``neg_controls`` ("beyond, p 0.2 (min 0.2)": the p-value and the
    smallest its controls allow, 1/(K+1); "within"; "—") and ``verdict``:
    "letter collapse" (flagged, whatever the controls say), "within controls" (no sign
    steers further than every control; "letter collapse, within controls" when both hold),
    "behaviour" (beyond the controls at one sign at
    least, both letters following the vector), "beyond controls, letters disagree", or
    without controls the letter reading plus "(no controls)".
    """
    if per_best.empty:
        return per_best
    out = per_best.copy()
    index = (
        comparison.set_index(["model", "dataset", "layer", "strength"])
        if comparison is not None and not comparison.empty
        else None
    )

    def word(row, strength) -> tuple[str, bool | None]:
        key = (row.model, row.dataset, row.layer, strength)
        if index is None or key not in index.index:
            return "—", None
        record = index.loc[key]
        within = record["within"]
        if not isinstance(within, (bool, np.bool_)) and not np.isfinite(within):
            return "—", None
        if bool(within):
            return "within", False
        floor = 1.0 / (1 + int(record["n_controls"])) if np.isfinite(record["n_controls"]) else float("nan")
        return f"beyond, p {record['p_value']:.2g} (min {floor:.2g})", True

    pos, neg, verdicts = [], [], []
    for row in out.itertuples():
        (pw, pb), (nw, nb) = word(row, row.pos_strength), word(row, row.neg_strength)
        pos.append(pw)
        neg.append(nw)
        if row.reading == "letter collapse":
            verdicts.append("letter collapse" + (", within controls" if pb is False and nb is False else ""))
        elif pb is None and nb is None:
            verdicts.append(f"{row.reading} (no controls)")
        elif not (pb or nb):
            verdicts.append("within controls")
        elif row.reading == "both letters follow the vector":
            verdicts.append("behaviour")
        else:
            verdicts.append("beyond controls, letters disagree")
    out["pos_controls"], out["neg_controls"], out["verdict"] = pos, neg, verdicts
    return out


def found_sentence(verdicts: pd.DataFrame, several_models: bool = True) -> str:
    """One line for the end of a run: which best-layer cells show behaviour, which letter
    collapse, which stay within the controls."""
    if verdicts.empty or "verdict" not in verdicts:
        return ""

    def name(r) -> str:
        return f"{r.model}/{r.dataset}" if several_models else str(r.dataset)

    groups: dict[str, list[str]] = {}
    for r in verdicts.itertuples():
        groups.setdefault(r.verdict, []).append(name(r))
    order = [
        "behaviour",
        "letter collapse",
        "letter collapse, within controls",
        "within controls",
        "beyond controls, letters disagree",
    ]
    parts = [f"{k} in {len(groups[k])} ({', '.join(groups[k])})" for k in order if k in groups]
    parts += [f"{k}: {', '.join(v)}" for k, v in groups.items() if k not in order]
    lead = "Found at the best layers: "
    if "behaviour" not in groups:
        lead = "Found at the best layers: no behaviour effect that beats both the controls and the letter check; "
    return lead + "; ".join(parts) + "."


def load_letter_control(run_dirs) -> pd.DataFrame | None:
    """``results/letter_control.parquet`` of the given runs, concatenated (None if none has one)."""
    from remote_steer.rundir import RunDir

    frames = [f for d in run_dirs if (f := RunDir(d).table("letter_control")) is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def report_table(letters: pd.DataFrame, best: pd.DataFrame) -> tuple[str, str, pd.DataFrame, str] | None:
    """The report's letter table: every best-layer cell read per letter, plus every
    flagged cell. Returns (key, title, formatted frame, caption), or None without data."""
    if letters.empty:
        return None
    per_best = best_layer_letters(letters, best)
    rows = []
    for r in per_best.itertuples():
        rows.append(
            {
                "model": r.model,
                "dataset": r.dataset,
                "layer": r.layer,
                "cell": "best layer",
                "A items +": f"{r.pos_effect_A:+.3g}",
                "B items +": f"{r.pos_effect_B:+.3g}",
                "A items −": f"{r.neg_effect_A:+.3g}",
                "B items −": f"{r.neg_effect_B:+.3g}",
                "A−B gap ±": f"{r.pos_letter_shift:+.3g} / {r.neg_letter_shift:+.3g}",
                "reading": r.reading,
            }
        )
    flagged = letters[letters["collapse"]]
    for r in flagged.itertuples():
        control = "" if not np.isfinite(r.letter_control_shift) else f"; A−B dir. {r.letter_control_shift:+.3g}"
        rows.append(
            {
                "model": r.model,
                "dataset": r.dataset,
                "layer": r.layer,
                "cell": f"flagged at {r.strength:+g}",
                "A items +": f"{r.effect_A:+.3g}" if r.strength > 0 else "",
                "B items +": f"{r.effect_B:+.3g}" if r.strength > 0 else "",
                "A items −": f"{r.effect_A:+.3g}" if r.strength < 0 else "",
                "B items −": f"{r.effect_B:+.3g}" if r.strength < 0 else "",
                "A−B gap ±": f"{r.letter_shift:+.3g}{control}",
                "reading": f"letter collapse: {r.collapse_rule}",
            }
        )
    if not rows:
        return None
    caption = (
        'Per-letter effects: mean logit-diff change on items whose matching answer is A ("A items") or B, at the '
        "strongest positive (+) and negative (−) strength. Behaviour moves both with the sign of the strength; a "
        "letter preference moves them apart, and cancels in the mean over balanced items. A−B gap: mean change of "
        "logit(A) − logit(B). Flagged (letter collapse): both signs move the gap toward the same letter, each at "
        "least 2 standard errors and at least the cell's behaviour shift; or the vector moves the gap at least as "
        "much as an A-minus-B direction of the same norm (the letter control, real models only). "
        + collapse_verdict(letters, best)
        + "."
    )
    return "letter_collapse", "Answer letters: behaviour or letter collapse", pd.DataFrame(rows), caption
