"""The statistics of the report against hand computation, on small planted tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from remote_steer.analysis import statistics as A


def frame(cells: dict, n_layers: int = 10, model: str = "m", dataset: str = "d") -> pd.DataFrame:
    """cells: {(layer, strength): steered values}, plus key "baseline": per-item baseline values."""
    baseline = np.asarray(cells["baseline"], dtype=float)
    rows = []
    for key, values in cells.items():
        if key == "baseline":
            continue
        layer, strength = key
        for i, value in enumerate(values):
            rows.append(
                dict(
                    model=model,
                    dataset=dataset,
                    item_id=f"i{i}",
                    layer=layer,
                    layer_fraction=layer / n_layers,
                    n_layers=n_layers,
                    strength=strength,
                    logit_diff=float(value),
                    baseline_logit_diff=baseline[i],
                    training="distilled",
                )
            )
    return pd.DataFrame(rows)


# baseline 1, 2, 3: mean 2, SD (ddof=1) 1
PLANTED = frame(
    {
        "baseline": [1, 2, 3],
        (4, 1.0): [2, 4, 6],  # mean 4 → Glass's delta (4 − 2) / 1 = 2
        (4, -1.0): [0, 1, 2],  # mean 1 → −1
        (6, 1.0): [3, 4, 5],  # mean 4 → 2 as well: a tie, the shallower layer is kept
        (8, 1.0): [1.5, 2.5, 3.5],  # 0.5
        (8, -1.0): [-1, 0, 1],  # −2
    }
)


def test_glass_deltas_by_hand():
    deltas = A.glass_deltas(PLANTED).set_index(["layer", "strength"])["glass_delta"]
    assert deltas[(4, 1.0)] == pytest.approx(2.0)
    assert deltas[(4, -1.0)] == pytest.approx(-1.0)
    assert deltas[(8, 1.0)] == pytest.approx(0.5)
    assert deltas[(8, -1.0)] == pytest.approx(-2.0)
    # a constant baseline has no spread: NaN, not a division by zero
    flat = frame({"baseline": [1, 1, 1], (4, 1.0): [1, 2, 3]})
    assert math.isnan(A.glass_deltas(flat)["glass_delta"].iloc[0])


def test_best_layer_by_hand():
    best = A.best_layers(PLANTED).iloc[0]
    assert best["best_layer"] == 4 and best["best_layer_fraction"] == pytest.approx(0.4)
    assert best["glass_delta_pos"] == pytest.approx(2.0) and best["glass_delta_neg"] == pytest.approx(-1.0)
    # only negative strengths: the layer that pushes furthest against the behaviour
    negative_only = PLANTED[PLANTED["strength"] < 0]
    assert A.best_layers(negative_only).iloc[0]["best_layer"] == 8


def test_bootstrap_draws_are_deltas_of_resampled_items():
    """With 3 items there are 10 multisets; each draw must be the delta of one of them,
    and resamples of one repeated item (3 of 27 ordered draws) have no spread → NaN."""
    cell = frame({"baseline": [0.0, 1.0, 3.0], (5, 1.0): [1.0, 1.5, 5.0]})
    boot = A.bootstrap_cells(cell, n_boot=4000, seed=1)[("m", "d")]
    draws = boot.draws[:, 0, 0]
    base, steered = np.array([0.0, 1.0, 3.0]), np.array([1.0, 1.5, 5.0])
    possible = set()
    for combo in itertools.combinations_with_replacement(range(3), 3):
        idx = list(combo)
        if np.std(base[idx]) > 0:
            possible.add(round(A.glass_delta(steered[idx], base[idx]), 9))
    assert {round(float(d), 9) for d in draws[~np.isnan(draws)]} <= possible
    assert np.mean(np.isnan(draws)) == pytest.approx(3 / 27, abs=0.02)


def test_bootstrap_interval_coverage():
    """200 simulated cells with a planted Glass's delta of 0.5 (and one of 0 at another
    layer): the 95% interval should cover the truth about 95% of the time."""
    rng = np.random.default_rng(7)
    n_items, n_sims = 40, 200
    rows = []
    for sim in range(n_sims):
        baseline = rng.normal(0.0, 1.0, n_items)  # true SD 1
        for layer, shift in ((3, 0.5), (7, 0.0)):
            steered = baseline + shift + rng.normal(0, 0.5, n_items)
            rows.append(
                pd.DataFrame(
                    dict(
                        model="m",
                        dataset=f"sim{sim}",
                        item_id=[str(i) for i in range(n_items)],
                        layer=layer,
                        layer_fraction=layer / 10,
                        strength=1.0,
                        logit_diff=steered,
                        baseline_logit_diff=baseline,
                        training="rl",
                    )
                )
            )
    results = pd.concat(rows, ignore_index=True)
    ci = A.glass_deltas_ci(results, n_boot=400, seed=0)
    for layer, truth in ((3, 0.5), (7, 0.0)):
        at = ci[ci["layer"] == layer]
        coverage = float(((at["ci_low"] <= truth) & (truth <= at["ci_high"])).mean())
        assert 0.90 <= coverage <= 0.99, (layer, coverage)


def test_best_layer_stability_by_hand():
    """Layer 2 beats layer 1 only when item 0 is in the resample: P = 1 − (4/5)^5."""
    baseline = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    layer2 = baseline + 1.0
    layer2[0] += 10.0
    cell = frame({"baseline": baseline, (1, 1.0): baseline + 1.1, (2, 1.0): layer2}, n_layers=4)
    best = A.best_layers_ci(cell, n_boot=20000, seed=3).iloc[0]
    assert best["best_layer"] == 2 and best["best_layer_mode"] == 2
    assert best["best_layer_stability"] == pytest.approx(1 - 0.8**5, abs=0.015)
    # a third of the resamples pick layer 1 (depth 0.25), the rest layer 2 (depth 0.5)
    assert best["best_fraction_ci_low"] == pytest.approx(0.25) and best["best_fraction_ci_high"] == pytest.approx(0.5)
    # a layer that wins by a mile is picked by every resample
    clear = frame({"baseline": baseline, (1, 1.0): baseline + 0.1, (2, 1.0): baseline + 5 + 0.1 * baseline}, n_layers=4)
    row = A.best_layers_ci(clear, n_boot=500).iloc[0]
    assert row["best_layer_stability"] == 1.0 and row["best_fraction_ci_low"] == row["best_fraction_ci_high"] == 0.5
    assert row["glass_delta_pos_ci_low"] <= row["glass_delta_pos"] <= row["glass_delta_pos_ci_high"]


def test_steerability_slopes_by_hand():
    # item 0: points (0, 1), (1, 3), (−1, 0) → slope Σ(x − x̄)(y − ȳ) / Σ(x − x̄)² = (5/3 + 4/3) / 2 = 1.5
    # items 1–4: exact lines y = b + k·s with planted k = 2, −1, 0.5, −3
    k = [None, 2.0, -1.0, 0.5, -3.0]
    baseline = [1.0, 0.0, 2.0, -1.0, 0.5]
    plus = [3.0] + [b + kk for b, kk in zip(baseline[1:], k[1:], strict=True)]
    minus = [0.0] + [b - kk for b, kk in zip(baseline[1:], k[1:], strict=True)]
    plus2 = [2 * p - b for p, b in zip(plus, baseline, strict=True)]  # strength 2 on the same lines (item 0 too)
    minus2 = [2 * m - b for m, b in zip(minus, baseline, strict=True)]
    cells = frame({"baseline": baseline, (5, 1.0): plus, (5, -1.0): minus})
    slopes = A.item_slopes(cells).set_index("item_id")["slope"]
    assert slopes["i0"] == pytest.approx(1.5)
    for i in range(1, 5):
        assert slopes[f"i{i}"] == pytest.approx(k[i])
    summary = A.steerability(cells).iloc[0]
    assert summary["n_anti_steerable"] == 2 and summary["anti_steerable_fraction"] == pytest.approx(0.4)
    assert summary["mean_slope"] == pytest.approx((1.5 + 2 - 1 + 0.5 - 3) / 5)
    # more strengths on exact lines give the same slopes; an explicit strength-0 row is not counted twice
    more = frame(
        {"baseline": baseline, (5, 1.0): plus, (5, -1.0): minus, (5, 2.0): plus2, (5, -2.0): minus2, (5, 0.0): baseline}
    )
    slopes = A.item_slopes(more).set_index("item_id")
    assert (slopes["n_strengths"] == 5).all()
    for i in range(1, 5):
        assert slopes.loc[f"i{i}", "slope"] == pytest.approx(k[i])


def test_tail_shift_flags_a_mean_that_hides_a_tail():
    baseline = np.arange(21, dtype=float)  # p5 = 1, p95 = 19 (linear interpolation, index 0.05 · 20 = 1)
    steered = baseline + 1
    steered[:2] = baseline[:2] - 5  # two items pushed hard the wrong way: sorted −5, −4, 3, 4, …, 21
    cells = frame({"baseline": baseline, (5, 1.0): steered, (5, -1.0): baseline - 1})
    tails = A.tail_shifts(cells).set_index("strength")
    pos = tails.loc[1.0]
    assert pos["mean_shift"] == pytest.approx((19 * 1 - 2 * 5) / 21)
    assert pos["p5_shift"] == pytest.approx(-4 - 1)
    assert pos["p95_shift"] == pytest.approx(20 - 19)
    assert bool(pos["flagged"]) and pos["tail_against"] == "p5"
    # a floor in baseline SDs (SD of 0..20 is 6.20): p5 moves 5 against, more than 0.5 SD, less than 1 SD
    sd = np.std(baseline, ddof=1)
    assert tails.loc[1.0, "baseline_sd"] == pytest.approx(sd)
    assert bool(A.tail_shifts(cells, min_shift_sd=4.9 / sd).set_index("strength").loc[1.0, "flagged"])
    assert not bool(A.tail_shifts(cells, min_shift_sd=5.1 / sd).set_index("strength").loc[1.0, "flagged"])
    neg = tails.loc[-1.0]
    assert neg["mean_shift"] == pytest.approx(-1) and neg["p5_shift"] == pytest.approx(-1)
    assert not bool(neg["flagged"]) and neg["tail_against"] == ""


def test_permutation_test_by_hand():
    labels = pd.Series(["rl", "rl", "distilled", "distilled", "distilled", "distilled"])
    # RL holds the two deepest models: the most extreme of the C(6,2) = 15 labellings, alone
    values = pd.Series([0.8, 0.7, 0.5, 0.6, 0.55, 0.45])
    result = A.permutation_test(values, labels, "rl", "distilled")
    assert result.exact and result.n_assignments == 15
    assert result.observed == pytest.approx(0.75 - 0.525)
    assert result.p_value == pytest.approx(1 / 15) and result.min_p == pytest.approx(1 / 15)
    # RL = {0.7, 0.45}: |diff| ≥ 0.0375 ⇔ pair sum ≤ 1.15 or ≥ 1.25; only {0.5, 0.7} (sum 1.2) is inside → 14/15
    values = pd.Series([0.7, 0.45, 0.5, 0.6, 0.55, 0.8])
    result = A.permutation_test(values, labels, "rl", "distilled")
    assert result.observed == pytest.approx(0.575 - 0.6125)
    assert result.p_value == pytest.approx(14 / 15)


def test_depth_by_model_and_dataset():
    best = pd.DataFrame(
        dict(
            model=["a", "a", "b", "b", "c", "c"],
            dataset=["x", "y"] * 3,
            best_layer_fraction=[0.5, 0.6, 0.7, 0.9, 0.4, 0.5],
        )
    )
    training = pd.Series({"a": "distilled", "b": "rl", "c": "distilled"})
    by_model = A.depth_by_model(best, training).set_index("model")
    assert by_model.loc["b", "mean_best_fraction"] == pytest.approx(0.8)
    assert by_model.loc["b", "sd_best_fraction"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    by_dataset = A.depth_by_dataset(best, training).set_index("dataset")
    assert by_dataset.loc["x", "rl_mean_fraction"] == pytest.approx(0.7)
    assert by_dataset.loc["x", "distilled_mean_fraction"] == pytest.approx(0.45)
    assert by_dataset.loc["y", "difference"] == pytest.approx(0.9 - 0.55)


def generation_frame() -> pd.DataFrame:
    # 4 items at layer 3, strength +1: valid T T T F, matching T F T F; baseline valid all, matching F F T F
    return pd.DataFrame(
        dict(
            model="m",
            dataset="d",
            item_id=["0", "1", "2", "3"],
            layer=3,
            layer_fraction=0.3,
            n_layers=10,
            strength=1.0,
            training="rl",
            text="(A)",
            letter=["A", "B", "A", None],
            valid=[True, True, True, False],
            matches_behavior=[True, False, True, False],
            baseline_letter="B",
            baseline_valid=True,
            baseline_matches=[False, False, True, False],
        )
    )


def test_generation_rates_by_hand():
    row = A.generation_rates(generation_frame()).iloc[0]
    assert row["valid_rate"] == pytest.approx(0.75)
    assert row["behavior_rate"] == pytest.approx(2 / 3)
    assert row["baseline_behavior_rate"] == pytest.approx(0.25)
    assert row["behavior_change"] == pytest.approx(2 / 3 - 1 / 4)
    # the baseline counts once per item even though it repeats on every configuration
    two = pd.concat([generation_frame(), generation_frame().assign(strength=-1.0, valid=False, matches_behavior=False)])
    validity = A.validity_by_model(A.generation_rates(two)).set_index("strength")["valid_rate"]
    assert validity[0.0] == pytest.approx(1.0) and validity[1.0] == pytest.approx(0.75) and validity[-1.0] == 0.0


def test_effect_agreement_correlations_by_hand():
    layers = [2, 4, 6, 8]
    deltas = pd.DataFrame(
        dict(
            model="m",
            dataset="d",
            layer=layers,
            strength=1.0,
            layer_fraction=[layer / 10 for layer in layers],
            glass_delta=[0.1, 0.5, 0.9, 0.3],
        )
    )
    rates = pd.DataFrame(
        dict(
            model="m",
            dataset="d",
            layer=layers,
            strength=1.0,
            layer_fraction=[layer / 10 for layer in layers],
            valid_rate=1.0,
            behavior_rate=0.5,
            baseline_behavior_rate=0.4,
            behavior_change=[0.0, 0.2, 0.1, 0.05],
        )
    )
    joined = A.logit_vs_generation(deltas, rates)
    best = pd.DataFrame(
        [
            dict(
                model="m",
                dataset="d",
                best_layer=6,
                best_layer_fraction=0.6,
                pos_strength=1.0,
                glass_delta_pos=0.9,
                neg_strength=float("nan"),
                glass_delta_neg=float("nan"),
            )
        ]
    )
    per_cell, per_dataset = A.effect_agreement(joined, best, rates)
    assert per_cell.iloc[0]["generation_layer"] == 6 and per_cell.iloc[0]["behavior_change_pos"] == pytest.approx(0.1)
    row = per_dataset.iloc[0]
    assert row["pearson_pos"] == pytest.approx(np.corrcoef([0.1, 0.5, 0.9, 0.3], [0.0, 0.2, 0.1, 0.05])[0, 1])
    # ranks: delta 1 3 4 2, change 1 4 3 2 → Spearman 1 − 6·Σd² / (n(n² − 1)) = 1 − 6·2 / 60 = 0.8
    assert row["spearman_pos"] == pytest.approx(0.8)


def test_model_summary_averages_datasets_at_their_best_layers():
    a = frame({"baseline": [1, 2, 3], (4, 1.0): [2, 4, 6], (6, 1.0): [1, 2, 3]}, dataset="x")  # best 4: Δ 2
    b = frame({"baseline": [0, 2, 4], (4, 1.0): [0, 2, 4], (6, 1.0): [2, 4, 6]}, dataset="y")  # best 6: Δ 1
    results = pd.concat([a, b], ignore_index=True)
    boot = A.bootstrap_cells(results, n_boot=200)
    best = A.best_layers_ci(results, boot=boot)
    row = A.model_summary(results, best, boot).iloc[0]
    assert row["glass_delta_pos"] == pytest.approx(1.5)
    assert row["baseline_mean_pos"] == pytest.approx(2.0) and row["steered_mean_pos"] == pytest.approx(4.0)
    assert row["glass_delta_pos_ci_low"] <= 1.5 <= row["glass_delta_pos_ci_high"]
