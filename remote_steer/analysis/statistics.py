"""Statistics over saved results. Imports no model code: it runs on results files alone.

Every function takes the tidy tables the runner writes (``results/logit_diff.parquet``,
``results/generation.parquet``) and returns a DataFrame (or a small dataclass); nothing
here draws or prints. Conventions:

- A *cell* is one model × dataset. Items are paired across layers and strengths (each
  item has one unsteered baseline), so the bootstrap resamples items once per replicate
  and applies the same resample to every layer and strength of the cell.
- Glass's delta = (mean steered − mean baseline) / SD(baseline), SD with ddof=1.
- The best layer maximises Glass's delta at the strongest positive strength (or, with
  only negative strengths, minimises it at the most negative one).
"""

from __future__ import annotations

import itertools
import math
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

CELL = ["model", "dataset"]
CONFIG = CELL + ["layer", "strength"]
ITEM_KEY = CONFIG[:2] + ["item_id", "layer", "strength"]


def glass_delta(steered: np.ndarray, baseline: np.ndarray) -> float:
    """(mean(steered) − mean(baseline)) / SD(baseline), SD with ddof=1.

    Glass's delta scales the shift by the baseline spread only, since steering
    can change the spread of the steered condition.
    """
    sd = float(np.std(baseline, ddof=1)) if len(baseline) > 1 else float("nan")
    if not sd > 0:
        return float("nan")
    return (float(np.mean(steered)) - float(np.mean(baseline))) / sd


def glass_deltas(results: pd.DataFrame) -> pd.DataFrame:
    """One row per model × dataset × layer × strength with Glass's delta and means.

    The baseline of a configuration is the baseline of the items present in it, so a
    configuration missing some items compares like with like.
    """
    if results.empty:
        return pd.DataFrame(
            columns=CONFIG + ["layer_fraction", "n_items", "baseline_mean", "steered_mean", "glass_delta"]
        )
    grouped = results.groupby(CONFIG, sort=True)
    out = grouped.agg(
        layer_fraction=("layer_fraction", "first"),
        n_items=("logit_diff", "size"),
        baseline_mean=("baseline_logit_diff", "mean"),
        steered_mean=("logit_diff", "mean"),
        baseline_sd=("baseline_logit_diff", "std"),  # pandas' std is ddof=1
    ).reset_index()
    sd = out.pop("baseline_sd").to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = (out["steered_mean"].to_numpy() - out["baseline_mean"].to_numpy()) / sd
    out["glass_delta"] = np.where(sd > 0, delta, np.nan)
    out["layer_fraction"] = out["layer_fraction"].astype(float)
    out["n_items"] = out["n_items"].astype(int)
    return out


def _pick_best(cell: pd.DataFrame) -> tuple[float, float, pd.Series]:
    """(strongest positive strength, most negative strength, the best row of ``cell``)."""
    positive = cell[cell["strength"] > 0]
    negative = cell[cell["strength"] < 0]
    pos_strength = float(positive["strength"].max()) if len(positive) else float("nan")
    neg_strength = float(negative["strength"].min()) if len(negative) else float("nan")
    if len(positive):
        ranked = positive[positive["strength"] == pos_strength]
        scores = ranked["glass_delta"]
    else:  # only negative strengths: the layer that moves most against the behaviour
        ranked = negative[negative["strength"] == neg_strength]
        scores = -ranked["glass_delta"]
    # all-NaN (constant baseline): fall back to the first layer rather than crash
    best = ranked.loc[scores.idxmax()] if scores.notna().any() else ranked.iloc[0]
    return pos_strength, neg_strength, best


def best_layers(results: pd.DataFrame, deltas: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model × dataset: the layer where the strongest positive strength moves the
    logit diff most (largest Glass's delta), and Glass's delta there at the strongest
    positive and negative strengths. ``deltas``: ``glass_deltas(results)`` if already computed."""
    deltas = glass_deltas(results) if deltas is None else deltas
    rows = []
    for key, cell in deltas.groupby(CELL, sort=True):
        pos_strength, neg_strength, best = _pick_best(cell)
        layer = int(best["layer"])
        at_layer = cell[cell["layer"] == layer].set_index("strength")["glass_delta"]
        rows.append(
            dict(
                zip(CELL, key, strict=True),
                best_layer=layer,
                best_layer_fraction=float(best["layer_fraction"]),
                pos_strength=pos_strength,
                glass_delta_pos=float(at_layer.get(pos_strength, float("nan"))),
                neg_strength=neg_strength,
                glass_delta_neg=float(at_layer.get(neg_strength, float("nan"))),
                n_items=int(best["n_items"]),
                n_layers_swept=int(cell["layer"].nunique()),
            )
        )
    return pd.DataFrame(rows)


# -- bootstrap -------------------------------------------------------------------


@dataclass
class CellBootstrap:
    """Bootstrap draws of Glass's delta for one model × dataset.

    ``draws[b, l, s]`` is Glass's delta in resample ``b`` at ``layers[l]``, ``strengths[s]``.
    """

    model: str
    dataset: str
    n_items: int
    layers: np.ndarray
    fractions: np.ndarray
    strengths: np.ndarray
    draws: np.ndarray


def _cell_seed(seed: int, model: str, dataset: str) -> np.random.Generator:
    # seeded by the cell's names, not its position, so merging runs leaves a cell's CI unchanged
    return np.random.default_rng([seed, zlib.crc32(f"{model}\x00{dataset}".encode())])


def _bootstrap_cell(cell: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> tuple:
    items, item_idx = np.unique(cell["item_id"].astype(str).to_numpy(), return_inverse=True)
    layers, layer_idx = np.unique(cell["layer"].to_numpy(), return_inverse=True)
    strengths, strength_idx = np.unique(cell["strength"].to_numpy(dtype=float), return_inverse=True)
    n, n_l, n_s = len(items), len(layers), len(strengths)
    baseline = np.full(n, np.nan)
    baseline[item_idx] = cell["baseline_logit_diff"].to_numpy(dtype=float)
    steered = np.full((n, n_l, n_s), np.nan)
    steered[item_idx, layer_idx, strength_idx] = cell["logit_diff"].to_numpy(dtype=float)
    fractions = np.full(n_l, np.nan)
    fractions[layer_idx] = cell["layer_fraction"].to_numpy(dtype=float)
    # centre on the baseline mean: the delta is shift-invariant and the sums stay well conditioned
    centre = np.nanmean(baseline)
    baseline, steered = baseline - centre, steered.reshape(n, -1) - centre
    # resampling items with replacement = multinomial counts per item; means become matrix products
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    present = ~np.isnan(steered)
    with np.errstate(invalid="ignore", divide="ignore"):
        steered_mean = (weights @ np.where(present, steered, 0.0)) / (weights @ present)
        base_mean = weights @ baseline / n
        base_var = np.clip((weights @ baseline**2 - n * base_mean**2) / (n - 1), 0.0, None)
        base_sd = np.sqrt(base_var)
        draws = (steered_mean - base_mean[:, None]) / base_sd[:, None]
    draws[~(base_sd > 1e-12 * (1 + np.abs(base_mean)))] = np.nan
    return n, layers, fractions, strengths, draws.reshape(n_boot, n_l, n_s)


def bootstrap_cells(results: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[tuple[str, str], CellBootstrap]:
    """Resample items with replacement within each model × dataset, ``n_boot`` times."""
    out = {}
    for (model, dataset), cell in results.groupby(CELL, sort=True):
        n, layers, fractions, strengths, draws = _bootstrap_cell(cell, n_boot, _cell_seed(seed, model, dataset))
        out[(model, dataset)] = CellBootstrap(model, dataset, n, layers, fractions, strengths, draws)
    return out


def _interval(draws: np.ndarray, level: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval ignoring NaN draws; NaN when more than half the draws are NaN."""
    tail = (1 - level) / 2 * 100
    with warnings.catch_warnings():  # all-NaN slices (constant baselines) are expected here
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=axis)
    too_few = np.mean(np.isnan(draws), axis=axis) > 0.5
    return np.where(too_few, np.nan, low), np.where(too_few, np.nan, high)


def glass_deltas_ci(
    results: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    boot: dict[tuple[str, str], CellBootstrap] | None = None,
) -> pd.DataFrame:
    """``glass_deltas`` plus percentile bootstrap intervals ``ci_low``, ``ci_high``."""
    deltas = glass_deltas(results)
    boot = boot if boot is not None else bootstrap_cells(results, n_boot, seed)
    rows = []
    for (model, dataset), b in boot.items():
        low, high = _interval(b.draws, level)
        for (li, layer), (si, strength) in itertools.product(enumerate(b.layers), enumerate(b.strengths)):
            rows.append((model, dataset, layer, strength, low[li, si], high[li, si]))
    intervals = pd.DataFrame(rows, columns=CONFIG + ["ci_low", "ci_high"])
    return deltas.merge(intervals, on=CONFIG, how="left")


def best_layers_ci(
    results: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    boot: dict[tuple[str, str], CellBootstrap] | None = None,
    deltas: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``best_layers`` plus the bootstrap's view of the choice.

    Added columns: intervals on Glass's delta at the chosen layer (``glass_delta_pos_ci_*``,
    ``glass_delta_neg_ci_*``; the layer is held fixed, so they ignore that it was picked on
    the same items), ``best_layer_mode`` (the layer most resamples pick),
    ``best_layer_stability`` (share of resamples picking the point-estimate layer) and
    ``best_fraction_ci_*`` (interval on the picked layer's depth fraction).
    """
    best = best_layers(results, deltas)
    boot = boot if boot is not None else bootstrap_cells(results, n_boot, seed)
    extra = []
    for row in best.itertuples():
        b = boot[(row.model, row.dataset)]
        li = int(np.searchsorted(b.layers, row.best_layer))
        record = dict(model=row.model, dataset=row.dataset)
        for sign, strength in (("pos", row.pos_strength), ("neg", row.neg_strength)):
            matches = np.flatnonzero(b.strengths == strength)
            low = high = np.nan
            if len(matches):
                low, high = map(float, _interval(b.draws[:, li, matches[0]], level))
            record[f"glass_delta_{sign}_ci_low"], record[f"glass_delta_{sign}_ci_high"] = low, high
        if not math.isnan(row.pos_strength):
            scores = b.draws[:, :, int(np.flatnonzero(b.strengths == row.pos_strength)[0])]
        else:
            scores = -b.draws[:, :, int(np.flatnonzero(b.strengths == row.neg_strength)[0])]
        valid = ~np.all(np.isnan(scores), axis=1)
        picks = np.argmax(np.where(np.isnan(scores), -np.inf, scores), axis=1)[valid]
        if len(picks):
            counts = np.bincount(picks, minlength=len(b.layers))
            record["best_layer_mode"] = int(b.layers[int(np.argmax(counts))])
            record["best_layer_stability"] = float(np.mean(picks == li))
            low, high = map(float, _interval(b.fractions[picks], level))
            record["best_fraction_ci_low"], record["best_fraction_ci_high"] = low, high
        else:
            record.update(
                best_layer_mode=-1,
                best_layer_stability=np.nan,
                best_fraction_ci_low=np.nan,
                best_fraction_ci_high=np.nan,
            )
        extra.append(record)
    return best.merge(pd.DataFrame(extra), on=CELL, how="left") if extra else best


def model_summary(
    results: pd.DataFrame,
    best: pd.DataFrame,
    boot: dict[tuple[str, str], CellBootstrap],
    level: float = 0.95,
    deltas: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per model, averaged over its datasets at each dataset's best layer: the study's
    first two tables (mean logit diff under positive steering; mean Glass's delta).

    The interval on the average delta resamples items independently in every cell
    (datasets are separate item sets) and averages the per-cell draws.
    """
    deltas = (glass_deltas(results) if deltas is None else deltas).set_index(CONFIG)
    rows = []
    for model, group in best.groupby("model", sort=False):
        training = results.loc[results["model"] == model, "training"].iloc[0]
        record = dict(model=model, training=training, n_datasets=len(group))
        for sign in ("pos", "neg"):
            strengths = group[f"{sign}_strength"]
            keys = [
                (model, r.dataset, r.best_layer, s)
                for r, s in zip(group.itertuples(), strengths, strict=True)
                if not math.isnan(s)
            ]
            found = [k for k in keys if k in deltas.index]
            at = deltas.loc[found] if found else deltas.iloc[0:0]
            extreme = strengths.max() if sign == "pos" else strengths.min()
            record[f"strength_{sign}"] = float(extreme) if strengths.notna().any() else float("nan")
            record[f"baseline_mean_{sign}"] = float(at["baseline_mean"].mean()) if len(at) else float("nan")
            record[f"steered_mean_{sign}"] = float(at["steered_mean"].mean()) if len(at) else float("nan")
            record[f"glass_delta_{sign}"] = float(group[f"glass_delta_{sign}"].mean())
            draws = []
            for key in found:
                b = boot[key[:2]]
                li = int(np.searchsorted(b.layers, key[2]))
                draws.append(b.draws[:, li, int(np.flatnonzero(b.strengths == key[3])[0])])
            if draws:
                low, high = _interval(np.mean(np.vstack(draws), axis=0), level)
                record[f"glass_delta_{sign}_ci_low"], record[f"glass_delta_{sign}_ci_high"] = float(low), float(high)
            else:
                record[f"glass_delta_{sign}_ci_low"] = record[f"glass_delta_{sign}_ci_high"] = float("nan")
        record["logit_diff_change_pos"] = record["steered_mean_pos"] - record["baseline_mean_pos"]
        rows.append(record)
    return pd.DataFrame(rows)


# -- per-item steerability and tails ---------------------------------------------


def item_slopes(results: pd.DataFrame) -> pd.DataFrame:
    """Per item × layer: least-squares slope of logit diff against strength (Tan et al.
    2024's steerability), the unsteered baseline included as strength 0.

    Explicit strength-0 rows, if a sweep has them, are replaced by the baseline so the
    origin is counted once.
    """
    keys = CELL + ["layer", "item_id"]
    steered = results.loc[results["strength"] != 0, keys + ["layer_fraction", "strength", "logit_diff"]]
    base = results.drop_duplicates(keys)[keys + ["layer_fraction", "baseline_logit_diff"]]
    base = base.rename(columns={"baseline_logit_diff": "logit_diff"}).assign(strength=0.0)
    points = pd.concat([steered, base], ignore_index=True)
    x, y = points["strength"].astype(float), points["logit_diff"].astype(float)
    points = points.assign(x=x, y=y, xx=x * x, xy=x * y)
    sums = (
        points.groupby(keys, sort=True)
        .agg(
            layer_fraction=("layer_fraction", "first"),
            n=("x", "size"),
            sx=("x", "sum"),
            sy=("y", "sum"),
            sxx=("xx", "sum"),
            sxy=("xy", "sum"),
        )
        .reset_index()
    )
    n = sums["n"].to_numpy(dtype=float)
    denominator = n * sums["sxx"] - sums["sx"] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (n * sums["sxy"] - sums["sx"] * sums["sy"]) / denominator
    sums["slope"] = np.where(denominator > 1e-12, slope, np.nan)
    sums["n_strengths"] = sums["n"].astype(int)
    return sums[keys + ["layer_fraction", "n_strengths", "slope"]]


def steerability(results: pd.DataFrame, slopes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model × dataset × layer: mean and median per-item slope and the fraction of
    anti-steerable items (slope < 0: steering towards the behaviour moves them away)."""
    slopes = slopes if slopes is not None else item_slopes(results)
    valid = slopes.dropna(subset=["slope"]).assign(anti=lambda d: d["slope"] < 0)
    return (
        valid.groupby(CELL + ["layer"], sort=True)
        .agg(
            layer_fraction=("layer_fraction", "first"),
            n_items=("slope", "size"),
            mean_slope=("slope", "mean"),
            median_slope=("slope", "median"),
            n_anti_steerable=("anti", "sum"),
            anti_steerable_fraction=("anti", "mean"),
        )
        .reset_index()
    )


def tail_shifts(
    results: pd.DataFrame, low: float = 0.05, high: float = 0.95, min_shift_sd: float = 0.0
) -> pd.DataFrame:
    """Per model × dataset × layer × strength: shift of the mean and of the ``low`` and
    ``high`` percentiles (steered − baseline, linear interpolation), in logit-diff units.

    "Right way" is the sign of the strength. ``flagged`` marks configurations where the
    mean moves the right way while a tail moves the wrong way by more than
    ``min_shift_sd`` baseline SDs; ``tail_against`` names which tail(s). A mean can hide
    a minority of items pushed against the behaviour.
    """
    lo, hi = f"p{low * 100:g}_shift", f"p{high * 100:g}_shift"
    grouped = results.groupby(CONFIG, sort=True)
    out = grouped.agg(layer_fraction=("layer_fraction", "first"), n_items=("logit_diff", "size")).reset_index()
    steered_q = grouped["logit_diff"].quantile([low, high]).unstack()
    base_q = grouped["baseline_logit_diff"].quantile([low, high]).unstack()
    mean_shift = grouped["logit_diff"].mean() - grouped["baseline_logit_diff"].mean()
    out["mean_shift"] = mean_shift.to_numpy()
    out[lo] = (steered_q[low] - base_q[low]).to_numpy()
    out[hi] = (steered_q[high] - base_q[high]).to_numpy()
    out["baseline_sd"] = grouped["baseline_logit_diff"].std(ddof=1).to_numpy()
    direction = np.sign(out["strength"].to_numpy(dtype=float))
    right = out["mean_shift"].to_numpy() * direction > 0
    floor = min_shift_sd * np.nan_to_num(out["baseline_sd"].to_numpy(dtype=float))
    low_wrong = out[lo].to_numpy() * direction < -floor
    high_wrong = out[hi].to_numpy() * direction < -floor
    out["tail_against"] = [
        ", ".join(name for name, wrong in ((f"p{low * 100:g}", a), (f"p{high * 100:g}", b)) if wrong)
        for a, b in zip(low_wrong, high_wrong, strict=True)
    ]
    out["flagged"] = right & (low_wrong | high_wrong)
    out.loc[~out["flagged"], "tail_against"] = ""
    return out


# -- RL versus distilled ---------------------------------------------------------


@dataclass(frozen=True)
class PermutationResult:
    """Two-sided exact (or Monte Carlo) permutation test of a difference in group means."""

    group_a: str
    group_b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    observed: float  # mean_a − mean_b
    p_value: float
    n_assignments: int
    exact: bool
    min_p: float  # smallest p-value any labelling of these values could give


def permutation_test(
    values: pd.Series,
    labels: pd.Series,
    group_a: str,
    group_b: str,
    max_exact: int = 200_000,
    n_random: int = 100_000,
    seed: int = 0,
) -> PermutationResult:
    """Relabel units (models) in every way that keeps the group sizes; p = share of
    labellings whose |mean_a − mean_b| is at least the observed one (observed included)."""
    mask = labels.isin([group_a, group_b]).to_numpy() & values.notna().to_numpy()
    x = values.to_numpy(dtype=float)[mask]
    is_a = labels.to_numpy()[mask] == group_a
    n, n_a = len(x), int(is_a.sum())
    if n_a == 0 or n_a == n:
        raise ValueError(f"permutation test needs both {group_a!r} and {group_b!r} units")
    total = math.comb(n, n_a)
    exact = total <= max_exact
    if exact:
        members = np.zeros((total, n), dtype=bool)
        for row, chosen in enumerate(itertools.combinations(range(n), n_a)):
            members[row, list(chosen)] = True
    else:
        rng = np.random.default_rng(seed)
        members = np.zeros((n_random, n), dtype=bool)
        order = np.argsort(rng.random((n_random, n)), axis=1)[:, :n_a]
        np.put_along_axis(members, order, True, axis=1)
    diffs = members @ x / n_a - (~members) @ x / (n - n_a)
    observed = float(x[is_a].mean() - x[~is_a].mean())
    tol = 1e-12 * max(1.0, float(np.max(np.abs(x))))
    extreme = np.abs(diffs) >= abs(observed) - tol
    p = float(extreme.mean()) if exact else float((extreme.sum() + 1) / (len(diffs) + 1))
    min_p = float(np.mean(np.abs(diffs) >= np.max(np.abs(diffs)) - tol))
    return PermutationResult(
        group_a,
        group_b,
        n_a,
        n - n_a,
        float(x[is_a].mean()),
        float(x[~is_a].mean()),
        observed,
        p,
        int(len(diffs)),
        exact,
        min_p,
    )


@dataclass(frozen=True)
class SignFlipResult:
    """Two-sided exact sign-flip test of a mean paired difference (matched designs)."""

    n: int
    mean: float  # mean paired difference
    n_positive: int  # differences > 0
    p_value: float
    n_assignments: int  # 2^n sign patterns
    min_p: float  # smallest p-value any n nonzero differences could give (2 / 2^n)


def sign_flip_test(differences: pd.Series) -> SignFlipResult:
    """Every pattern of signs on the paired differences (each pair's labels swapped or not);
    p = share of patterns whose |mean| is at least the observed |mean| (observed included)."""
    d = differences.dropna().to_numpy(dtype=float)
    n = len(d)
    if n == 0:
        raise ValueError("sign-flip test needs at least one paired difference")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    means = signs @ d / n
    observed = float(d.mean())
    tol = 1e-12 * max(1.0, float(np.max(np.abs(d))))
    p = float(np.mean(np.abs(means) >= abs(observed) - tol))
    return SignFlipResult(n, observed, int((d > 0).sum()), p, len(signs), 2.0 / len(signs))


def depth_by_model(best: pd.DataFrame, training: pd.Series) -> pd.DataFrame:
    """Per model: best-layer depth fraction averaged over datasets, and its spread."""
    frame = best.assign(training=best["model"].map(training))
    return (
        frame.groupby("model", sort=False)
        .agg(
            training=("training", "first"),
            n_datasets=("best_layer_fraction", "size"),
            mean_best_fraction=("best_layer_fraction", "mean"),
            sd_best_fraction=("best_layer_fraction", lambda s: s.std(ddof=1) if len(s) > 1 else np.nan),
            min_best_fraction=("best_layer_fraction", "min"),
            max_best_fraction=("best_layer_fraction", "max"),
        )
        .reset_index()
    )


def depth_by_dataset(
    best: pd.DataFrame, training: pd.Series, group_a: str = "rl", group_b: str = "distilled"
) -> pd.DataFrame:
    """Per dataset: mean best depth fraction of each training group and their difference."""
    frame = best.assign(training=best["model"].map(training))
    table = frame.pivot_table(index="dataset", columns="training", values="best_layer_fraction", aggfunc="mean")
    out = pd.DataFrame({"dataset": table.index})
    for group in (group_a, group_b):
        out[f"{group}_mean_fraction"] = table[group].to_numpy() if group in table else np.nan
    out["difference"] = out[f"{group_a}_mean_fraction"] - out[f"{group_b}_mean_fraction"]
    return out


# -- generation ------------------------------------------------------------------


def _as_bool(series: pd.Series) -> pd.Series:
    return series.fillna(False).astype(bool)


def generation_rates(generation: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset × layer × strength: validity rate, behaviour rate (among valid
    answers), the same at baseline for the same items, and the behaviour change."""
    g = generation.assign(
        valid_=_as_bool(generation["valid"]),
        match_valid=_as_bool(generation["matches_behavior"]) & _as_bool(generation["valid"]),
        base_valid=_as_bool(generation["baseline_valid"]),
        base_match_valid=_as_bool(generation["baseline_matches"]) & _as_bool(generation["baseline_valid"]),
    )
    out = (
        g.groupby(CONFIG, sort=True)
        .agg(
            layer_fraction=("layer_fraction", "first"),
            n_items=("valid_", "size"),
            n_valid=("valid_", "sum"),
            n_match=("match_valid", "sum"),
            n_base_valid=("base_valid", "sum"),
            n_base_match=("base_match_valid", "sum"),
        )
        .reset_index()
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out["valid_rate"] = out["n_valid"] / out["n_items"]
        out["behavior_rate"] = (out["n_match"] / out["n_valid"]).where(out["n_valid"] > 0)
        out["baseline_valid_rate"] = out["n_base_valid"] / out["n_items"]
        out["baseline_behavior_rate"] = (out["n_base_match"] / out["n_base_valid"]).where(out["n_base_valid"] > 0)
    out["behavior_change"] = out["behavior_rate"] - out["baseline_behavior_rate"]
    return out.drop(columns=["n_match", "n_base_match"])


def logit_vs_generation(deltas: pd.DataFrame, rates: pd.DataFrame) -> pd.DataFrame:
    """Glass's delta of the logit diff next to the generation behaviour change, for every
    model × dataset × layer × strength present in both tables."""
    left = deltas[CONFIG + ["layer_fraction", "glass_delta"]]
    right = rates[CONFIG + ["valid_rate", "behavior_rate", "baseline_behavior_rate", "behavior_change"]]
    return left.merge(right, on=CONFIG, how="inner")


def _correlations(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    ok = x.notna() & y.notna()
    x, y = x[ok], y[ok]
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan"), float("nan")
    pearson = float(np.corrcoef(x, y)[0, 1])
    spearman = float(np.corrcoef(x.rank(), y.rank())[0, 1])  # Pearson on ranks (average ties)
    return pearson, spearman


def effect_agreement(
    joined: pd.DataFrame, best: pd.DataFrame, rates: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per model × dataset, per dataset) comparison of the logit-diff effect with the
    generation behaviour change.

    Per model × dataset, the generation layer nearest in depth to the logit-diff best
    layer is used (generation may sweep fewer layers). Per dataset: mean of those, and
    Pearson / Spearman correlations over all model × layer points at each strength sign.
    """
    cells = []
    for row in best.itertuples():
        cell = rates[(rates["model"] == row.model) & (rates["dataset"] == row.dataset)]
        if cell.empty:
            continue
        nearest = cell.iloc[int(np.argmin(np.abs(cell["layer_fraction"].to_numpy() - row.best_layer_fraction)))]
        record = dict(
            model=row.model,
            dataset=row.dataset,
            best_layer=row.best_layer,
            glass_delta_pos=row.glass_delta_pos,
            glass_delta_neg=row.glass_delta_neg,
            generation_layer=int(nearest["layer"]),
        )
        at = cell[cell["layer"] == nearest["layer"]].set_index("strength")
        for sign, strength in (("pos", row.pos_strength), ("neg", row.neg_strength)):
            record[f"behavior_change_{sign}"] = float(at["behavior_change"].get(strength, np.nan))
            record[f"valid_rate_{sign}"] = float(at["valid_rate"].get(strength, np.nan))
        record["baseline_behavior_rate"] = float(at["baseline_behavior_rate"].mean())
        cells.append(record)
    per_cell = pd.DataFrame(cells)
    per_dataset = []
    for dataset, group in per_cell.groupby("dataset", sort=False) if len(per_cell) else []:
        points = joined[joined["dataset"] == dataset]
        record = dict(
            dataset=dataset,
            n_models=len(group),
            glass_delta_pos=group["glass_delta_pos"].mean(),
            behavior_change_pos=group["behavior_change_pos"].mean(),
            behavior_change_neg=group["behavior_change_neg"].mean(),
        )
        for sign, sel in (("pos", points["strength"] > 0), ("neg", points["strength"] < 0)):
            record[f"n_points_{sign}"] = int(sel.sum())
            record[f"pearson_{sign}"], record[f"spearman_{sign}"] = _correlations(
                points.loc[sel, "glass_delta"], points.loc[sel, "behavior_change"]
            )
        per_dataset.append(record)
    return per_cell, pd.DataFrame(per_dataset)


def validity_by_model(rates: pd.DataFrame) -> pd.DataFrame:
    """Per model × strength: validity rate pooled over datasets and layers; strength 0 is
    the unsteered baseline (each item counted once per dataset)."""
    steered = rates.groupby(["model", "strength"], sort=True)[["n_valid", "n_items"]].sum().reset_index()
    # the baseline is repeated on every layer × strength row: count it from one configuration per cell
    first = rates.sort_values(CONFIG).drop_duplicates(CELL)
    base = first.groupby("model", sort=True)[["n_base_valid", "n_items"]].sum().reset_index()
    base = base.rename(columns={"n_base_valid": "n_valid"}).assign(strength=0.0)
    out = pd.concat([steered[steered["strength"] != 0], base], ignore_index=True)
    out["valid_rate"] = out["n_valid"] / out["n_items"]
    return out.sort_values(["model", "strength"]).reset_index(drop=True)
