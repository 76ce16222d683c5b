"""Letter-collapse detection on planted effects (and its hook into the closing table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from remote_steer.analysis.letters import collapse_summary, collapse_verdict, letter_effects


def _planted(n=20, seed=0) -> pd.DataFrame:
    """Layer 5: both signs push toward "A" by 2 (a letter effect, no behaviour).
    Layer 6: a behaviour effect of ±1.5 on both letters (no letter preference).
    Layer 7: both signs push toward "A", but far less than a 1.5 behaviour effect."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        letter = "A" if i % 2 == 0 else "B"
        sign = 1.0 if letter == "A" else -1.0  # letter gap → logit diff
        base = rng.normal(0, 1)
        for layer, strength, behaviour, toward_a in [
            (5, 16.0, 0.0, 2.0),
            (5, -16.0, 0.0, 2.0),
            (6, 16.0, 1.5, 0.0),
            (6, -16.0, -1.5, 0.0),
            (7, 16.0, 1.5, 0.3),
            (7, -16.0, -1.5, 0.3),
        ]:
            change = behaviour + sign * toward_a + rng.normal(0, 0.05)
            rows.append(
                {
                    "model": "m",
                    "dataset": "d",
                    "item_id": f"i{i}",
                    "layer": layer,
                    "strength": strength,
                    "logit_diff": base + change,
                    "baseline_logit_diff": base,
                    "matching_letter": letter,
                }
            )
    return pd.DataFrame(rows)


def test_planted_letter_collapse_is_flagged_with_per_letter_effects():
    table = letter_effects(_planted()).set_index(["layer", "strength"])
    collapsed = table.loc[(5, 16.0)]
    # per-letter effects computed by hand: A items +2, B items −2; no behaviour shift
    assert collapsed["effect_A"] == pytest.approx(2.0, abs=0.05)
    assert collapsed["effect_B"] == pytest.approx(-2.0, abs=0.05)
    assert collapsed["behaviour_shift"] == pytest.approx(0.0, abs=0.05)
    assert collapsed["letter_shift"] == pytest.approx(2.0, abs=0.05)
    assert collapsed["n_A"] == collapsed["n_B"] == 10
    assert bool(table.loc[(5, 16.0), "collapse"]) and bool(table.loc[(5, -16.0), "collapse"])
    assert table.loc[(5, -16.0), "collapse_rule"] == "both signs → A"
    # a real behaviour effect is not flagged, nor a letter drift smaller than the behaviour effect
    assert not table.loc[6, "collapse"].any()
    assert not table.loc[7, "collapse"].any()
    summary = collapse_summary(table.reset_index())
    assert set(summary["layer"]) == {5}
    best = pd.DataFrame({"model": ["m"], "dataset": ["d"], "best_layer": [5]})
    assert "2 of 6 cells flagged" in collapse_verdict(table.reset_index(), best)
    assert "m/d" in collapse_verdict(table.reset_index(), best)


def test_letter_control_rule():
    results = _planted()
    control = pd.DataFrame(
        {
            "model": "m",
            "dataset": "d",
            "layer": [5, 5, 6, 6],
            "strength": [16.0, -16.0, 16.0, -16.0],
            "letter_control_shift": [1.0, -1.0, 5.0, -5.0],
        }
    )
    table = letter_effects(results[results["layer"] != 5].pipe(lambda f: pd.concat([f, _one_sided()])), control)
    table = table.set_index(["layer", "strength"])
    # layer 5, +16 only: the vector moves the letter gap by 2 > the A−B direction's 1 → flagged by the control
    assert table.loc[(5, 16.0), "collapse_rule"] == "≥ A−B dir."
    assert not table.loc[6, "collapse"].any()


def _one_sided() -> pd.DataFrame:
    frame = _planted()
    return frame[(frame["layer"] == 5) & (frame["strength"] > 0)]


def test_closing_verdict_combines_controls_and_letters():
    """Three planted best-layer cells: a behaviour effect beyond every control, a letter
    collapse that also beats the controls, and a behaviour-like effect that random and
    shuffled vectors match. The verdict reads each one right, and the sentence says so."""
    from remote_steer.analysis import controls as C
    from remote_steer.analysis.letters import best_layer_letters, found_sentence, with_controls
    from remote_steer.analysis.statistics import glass_deltas

    planted = _planted()
    results = pd.concat(
        [
            planted[planted["layer"] == layer].assign(dataset=d)
            for d, layer in (("real", 6), ("letters", 5), ("weak", 6))
        ],
        ignore_index=True,
    )
    results = results.assign(layer_fraction=results["layer"] / 10)
    deltas = glass_deltas(results)
    # controls: per configuration two vectors; for "weak" one control goes further than the real vector
    rows = []
    for r in deltas.itertuples():
        direction = np.sign(r.strength)
        for v, scale in enumerate((0.1, 1.5 if r.dataset == "weak" else 0.2)):
            rows.append(
                {
                    "model": r.model,
                    "dataset": r.dataset,
                    "layer": r.layer,
                    "strength": r.strength,
                    "kind": "random",
                    "vector": v,
                    "layer_fraction": 0.5,
                    "glass_delta": direction * abs(r.glass_delta) * scale if r.dataset != "letters" else 0.0,
                }
            )
    comparison = C.compare(deltas, pd.DataFrame(rows))
    best = pd.DataFrame(
        {
            "model": "m",
            "dataset": ["real", "letters", "weak"],
            "best_layer": [6, 5, 6],
            "pos_strength": 16.0,
            "neg_strength": -16.0,
        }
    )
    verdicts = with_controls(best_layer_letters(letter_effects(results), best), comparison).set_index("dataset")
    assert verdicts.loc["real", "verdict"] == "behaviour"
    assert verdicts.loc["real", "pos_controls"].startswith("beyond, p 0.33")  # (1 + 0) / (1 + 2)
    assert verdicts.loc["letters", "verdict"] == "letter collapse, within controls"  # its controls sit at 0 too
    assert verdicts.loc["weak", "verdict"] == "within controls"
    assert verdicts.loc["weak", "pos_controls"] == "within"
    sentence = found_sentence(verdicts.reset_index(), several_models=False)
    assert "behaviour in 1 (real)" in sentence and "letter collapse, within controls in 1 (letters)" in sentence
    assert "within controls in 1 (weak)" in sentence
    # without controls the letter reading stands and says so
    bare = with_controls(best_layer_letters(letter_effects(results), best), None).set_index("dataset")
    assert bare.loc["real", "verdict"] == "both letters follow the vector (no controls)"
    assert bare.loc["real", "pos_controls"] == "—"
