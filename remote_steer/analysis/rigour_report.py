"""The report's rigour sections (docs/rigour.md): norms, cross-fitted peaks, vector
uncertainty and controls, each a table and a figure, from saved results only.

``report.build_report`` calls ``load_tables`` and ``sections``; everything here works on
the tidy tables the runner writes (``results/norms.parquet``, ``results/controls.parquet``)
and on the merged logit-diff results. Imports no model code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from remote_steer.analysis import controls as C
from remote_steer.analysis import crossfit as X
from remote_steer.analysis import statistics as A
from remote_steer.analysis import uncertainty as U

FIGURES = ("norms_by_depth", "crossfit_peaks", "vector_uncertainty", "controls")
SECTIONS = {
    "norms": "## Vector and residual norms",
    "crossfit": "## Honest layer choice: cross-fitted peaks",
    "vector_uncertainty": "## Vector uncertainty: bootstrap vectors",
    "controls": "## Controls: random directions and shuffled labels",
}
CONTROL_KEY = A.ITEM_KEY + ["seed", "kind", "vector"]


@dataclass
class Section:
    tables: list[tuple[str, str, pd.DataFrame, str]] = field(default_factory=list)  # key, title, frame, caption
    texts: dict[str, str] = field(default_factory=dict)  # table key -> text printed after it
    numeric: dict[str, pd.DataFrame] = field(default_factory=dict)
    draws: list[tuple[str, str, Callable[[Path], list[Path]] | None, str]] = field(default_factory=list)


def _g(x, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _f(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _pct(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"


def _plots():
    from remote_steer.analysis import rigour_plots  # matplotlib only when drawing

    return rigour_plots


def load_tables(run_dirs: list[Path], infos, normalise, notes: list[str]) -> dict[str, pd.DataFrame | None]:
    """``results/norms.parquet`` and ``results/controls.parquet`` of every run (absent: None),
    normalised like the logit table (registry names, run and seed columns)."""
    out: dict[str, pd.DataFrame | None] = {}
    for table in ("norms", "controls", "decodability"):  # decodability: analysis/depth_report.py
        frames = []
        for path, info in zip(run_dirs, infos, strict=True):
            file = Path(path) / "results" / f"{table}.parquet"
            if not file.is_file():
                continue
            frame = pd.read_parquet(file)
            if frame.empty:
                continue
            if table == "controls":
                frame = normalise(frame, {}, info)
            else:
                frame = frame.assign(model=frame["model"].astype(str).map(_canonical), run=info.name, seed=info.seed)
            frames.append(frame)
        if not frames:
            out[table] = None
            continue
        merged = pd.concat(frames, ignore_index=True)
        key = CONTROL_KEY if table == "controls" else ["model", "dataset", "layer", "seed"]
        dup = merged.duplicated(key, keep="first")
        if dup.any():
            notes.append(f"{table}: {int(dup.sum())} repeated row(s) dropped (the first run listed wins).")
        out[table] = merged.loc[~dup].reset_index(drop=True)
    return out


def _canonical(name: str) -> str:
    from remote_steer.models.registry import lookup

    card = lookup(name)
    return card.name if card is not None else name


def sections(
    logit: pd.DataFrame,
    best: pd.DataFrame,
    deltas: pd.DataFrame,
    extra: dict,
    models: list[str],
    datasets: list[str],
    seed: int,
    level: float,
) -> Section:
    out = Section()
    _norms(out, extra.get("norms"), best, logit, models, datasets)
    _crossfit(out, logit, models, datasets, seed)
    controls = extra.get("controls")
    vector = C.vector_deltas(controls) if controls is not None else None
    _uncertainty(out, logit, best, deltas, vector, models, datasets, level)
    _controls(out, deltas, best, vector, models, datasets)
    return out


def _order(frame: pd.DataFrame, models, datasets) -> pd.DataFrame:
    if frame.empty:
        return frame
    key = frame["model"].map({m: i for i, m in enumerate(models)}).fillna(len(models)) * 1000 + frame["dataset"].map(
        {d: i for i, d in enumerate(datasets)}
    ).fillna(len(datasets))
    return frame.assign(_k=key).sort_values(["_k"], kind="stable").drop(columns="_k").reset_index(drop=True)


# -- norms ---------------------------------------------------------------------


def _norms(out: Section, norms: pd.DataFrame | None, best, logit, models, datasets) -> None:
    peaks = X.peak_by_strength(logit)
    consistency = X.peak_consistency(peaks)
    out.numeric.update(peak_by_strength=peaks, peak_consistency=consistency)
    multi = consistency[consistency["n_strengths"] > 1] if len(consistency) else consistency
    if len(multi):
        rows = [
            {
                "model": r.model,
                "dataset": r.dataset,
                "sign": r.sign,
                "strengths": r.n_strengths,
                "peak depth range": f"{_f(r.min_fraction)}–{_f(r.max_fraction)}",
                "holds": "yes" if r.spread <= 0.1 else f"no (moves {_f(r.spread)})",
            }
            for r in _order(multi, models, datasets).itertuples()
        ]
        peak_text = (
            f"Peak depth holds (moves ≤ 0.10 of depth) across strengths in "
            f"{int((multi['spread'] <= 0.1).sum())} of {len(multi)} model × dataset × sign cells."
        )
        out.tables.append(
            (
                "peak_by_strength",
                "Does the peak depth hold across strengths?",
                pd.DataFrame(rows),
                "Per model × dataset × sign of strength: the range of best-layer depth over that sign's "
                "strengths (best = largest Glass's delta in the strength's direction); all values in "
                "tables/peak_by_strength.csv.",
            )
        )
        out.texts["peak_by_strength"] = peak_text
    else:
        out.texts["norms_note"] = (
            "One strength per sign: whether the peak depth holds across strengths cannot be "
            'checked (sweep several strengths per sign, e.g. strength_unit = "residual" with '
            "strengths [-0.5, -0.25, 0.25, 0.5])."
        )
    if norms is None:
        out.draws.append(
            (
                "norms_by_depth",
                "Vector and residual norms by depth",
                None,
                "no results/norms.parquet in these runs (written by runs of this version)",
            )
        )
        return
    out.numeric["norms"] = norms
    at_best = norms.merge(best[A.CELL + ["best_layer"]].rename(columns={"best_layer": "layer"}), on=A.CELL + ["layer"])
    at_best = at_best.drop_duplicates(A.CELL + ["layer"])
    spread = norms.groupby(A.CELL).agg(ratio_min=("ratio", "min"), ratio_max=("ratio", "max")).reset_index()
    table = _order(at_best.merge(spread, on=A.CELL), models, datasets)
    rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "best layer": r.layer,
            "depth": _f(r.layer_fraction),
            "vector norm": _g(r.vector_norm),
            "residual norm": _g(r.residual_norm),
            "vector / residual": _g(r.ratio),
            "ratio over layers": f"{_g(r.ratio_min, 2)}–{_g(r.ratio_max, 2)}",
        }
        for r in table.itertuples()
    ]
    out.tables.append(
        (
            "norms",
            "Vector and residual-stream norms at the best layer",
            pd.DataFrame(rows),
            "Vector norm = ‖mean difference‖ at that layer; residual norm = mean ‖residual stream‖ (the "
            "decoder-layer output) over the steered positions of the training prompts, read in the "
            'extraction pass. With strength_unit = "raw", strength ±1 adds a vector this fraction of the '
            "residual stream's size; every layer is in tables/norms.csv.",
        )
    )
    out.draws.append(
        (
            "norms_by_depth",
            "Vector and residual norms by depth",
            lambda s: _plots().norms_by_depth(norms, models, datasets, s),
            "",
        )
    )


# -- cross-fitting --------------------------------------------------------------


def _crossfit(out: Section, logit, models, datasets, seed: int) -> None:
    cf = _order(X.crossfit_best_layers(logit, seed), models, datasets)
    out.numeric["crossfit"] = cf
    rows = []
    for r in cf.itertuples():
        rows.append(
            {
                "model": r.model,
                "dataset": r.dataset,
                "in-sample layer": r.best_layer,
                "in-sample depth": _f(r.best_layer_fraction),
                "in-sample Δ": _g(r.glass_delta_pos),
                "half-1 / half-2 layer": f"{_int(r.layer_half_1)} / {_int(r.layer_half_2)}",
                "cross-fitted depth": _f(r.crossfit_fraction),
                "cross-fitted Δ": _g(r.crossfit_glass_delta_pos),
            }
        )
    out.tables.append(
        (
            "crossfit",
            "Cross-fitted best layer and Glass's delta, beside in-sample",
            pd.DataFrame(rows),
            "The held-out items of each model × dataset are split in two halves (seeded hash of the item "
            "id); the best layer is picked on one half and Glass's delta measured on the other, both ways, "
            "and averaged. In-sample = picked and measured on all items (optimistic). Cross-fitted depth = "
            "mean of the two picked depths; the RL versus distilled comparison uses it.",
        )
    )
    valid = cf.dropna(subset=["crossfit_glass_delta_pos"]) if "crossfit_glass_delta_pos" in cf else cf.iloc[0:0]
    if len(valid):
        gap = (valid["glass_delta_pos"] - valid["crossfit_glass_delta_pos"]).mean()
        out.texts["crossfit"] = (
            f"Mean in-sample minus cross-fitted Glass's delta: {gap:+.3g} over {len(valid)} "
            f"model × dataset cells; the halves pick the same layer in "
            f"{int(valid['halves_agree'].astype(bool).sum())} of them."
        )
    out.draws.append(
        (
            "crossfit_peaks",
            "In-sample versus cross-fitted Glass's delta at the best layer",
            (lambda s: _plots().crossfit_dumbbell(cf, s)) if len(valid) else None,
            "too few held-out items to split in halves",
        )
    )


def _int(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else str(int(x))


def crossfit_depths(best: pd.DataFrame, cf: pd.DataFrame) -> pd.DataFrame:
    """``best`` with ``best_layer_fraction`` replaced by the cross-fitted depth where there is one."""
    merged = best.merge(cf[A.CELL + ["crossfit_fraction"]], on=A.CELL, how="left")
    merged["best_layer_fraction"] = merged["crossfit_fraction"].fillna(merged["best_layer_fraction"])
    return merged.drop(columns="crossfit_fraction")


# -- vector uncertainty ---------------------------------------------------------


def _uncertainty(out: Section, logit, best, deltas, vector, models, datasets, level) -> None:
    by_seed = U.best_by_seed(logit)
    if len(by_seed):
        out.numeric["best_by_seed"] = by_seed
        spread = (
            by_seed.groupby(A.CELL)
            .agg(
                n=("seed", "nunique"),
                lo=("best_layer_fraction", "min"),
                hi=("best_layer_fraction", "max"),
                dlo=("glass_delta_pos", "min"),
                dhi=("glass_delta_pos", "max"),
            )
            .reset_index()
        )
        out.texts["seeds"] = (
            "Runs with different seeds pooled as replicates; per model × dataset the seeds' best "
            "depths span: "
            + "; ".join(
                f"{r.model} × {r.dataset}: {_f(r.lo)}–{_f(r.hi)} (Δ {_g(r.dlo)}–{_g(r.dhi)}, {r.n} seeds)"
                for r in spread.itertuples()
            )
            + "."
        )
    boot = vector[vector["kind"] == "bootstrap"] if vector is not None else None
    if boot is None or boot.empty:
        out.draws.append(
            (
                "vector_uncertainty",
                "Glass's delta by depth for bootstrap vectors",
                None,
                "no bootstrap vectors in these runs (set [controls] bootstrap = K)",
            )
        )
        return
    spread = _order(U.bootstrap_spread(best, boot, level), models, datasets)
    out.numeric["vector_uncertainty"] = spread
    rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "vectors": r.n_vectors,
            "best layer": r.best_layer,
            "same layer": _pct(r.share_same_layer),
            "mode": r.mode_layer,
            f"depth {level:.0%}": f"{_f(r.fraction_low)}–{_f(r.fraction_high)}",
            "Δ (real vector)": _g(r.glass_delta),
            f"Δ at best layer {level:.0%}": f"{_g(r.delta_at_best_low)}–{_g(r.delta_at_best_high)}",
            f"Δ at own best {level:.0%}": f"{_g(r.delta_own_low)}–{_g(r.delta_own_high)}",
        }
        for r in spread.itertuples()
    ]
    out.tables.append(
        (
            "vector_uncertainty",
            "Vector uncertainty: best layer and Glass's delta over bootstrap vectors",
            pd.DataFrame(rows),
            "Each bootstrap vector is the CAA mean difference over a resample (with replacement) of the "
            "training items, evaluated on the same held-out items as the real vector. Same layer = share of "
            "bootstrap vectors whose best layer is the real vector's; depth and Δ ranges are percentile "
            "intervals over the vectors: the uncertainty that comes from the vector, not from the test "
            "items (Table of best layers).",
        )
    )
    real = deltas
    out.draws.append(
        (
            "vector_uncertainty",
            "Glass's delta by depth for bootstrap vectors",
            lambda s: _plots().bootstrap_curves(real, boot, best, models, datasets, s),
            "",
        )
    )


# -- controls -------------------------------------------------------------------


def _controls(out: Section, deltas, best, vector, models, datasets) -> None:
    pool = vector[vector["kind"].isin(C.CONTROL_KINDS)] if vector is not None else None
    if pool is None or pool.empty:
        out.draws.append(
            (
                "controls",
                "Real vector against control vectors",
                None,
                "no control vectors in these runs (set [controls] random = N and/or shuffled = N)",
            )
        )
        return
    comparison = C.compare(deltas, pool)
    out.numeric["controls"] = comparison
    at_best = comparison.merge(
        best[A.CELL + ["best_layer"]].rename(columns={"best_layer": "layer"}), on=A.CELL + ["layer"]
    )
    at_best = _order(at_best, models, datasets)
    rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "layer": r.layer,
            "strength": f"{r.strength:+g}",
            "Δ real": _g(r.glass_delta),
            "random range": f"{_g(r.random_min, 2)}–{_g(r.random_max, 2)}",
            "shuffled range": f"{_g(r.shuffled_min, 2)}–{_g(r.shuffled_max, 2)}",
            "controls": r.n_controls,
            "p": _g(r.p_value, 2),
            "smallest p": _g(C.p_floor(r.n_controls), 2),
            "within controls": "yes" if r.within else "no",
        }
        for r in at_best.itertuples()
    ]
    counts = C.summary(comparison)
    n_controls = int(comparison["n_controls"].max()) if len(comparison) else 0
    head = at_best[at_best["strength"] == at_best.groupby(A.CELL)["strength"].transform("max")]
    inside = [f"{r.model} × {r.dataset}" for r in head.itertuples() if r.within is True or r.within == 1.0]
    outside = [
        f"{r.model} × {r.dataset} (p = {_g(r.p_value, 2)})"
        for r in head.itertuples()
        if not (r.within is True or r.within == 1.0)
    ]
    verdict = ""
    if inside:
        verdict += (
            "At the best layer and strongest strength the real vector's effect is **within the controls' range** "
            "in " + ", ".join(inside) + ": there it steers no further than a random direction of the same "
            "size or a vector from shuffled labels, so the effect says nothing about the behaviour. "
        )
    if outside:
        verdict += "It steers further than every control in " + ", ".join(outside) + ". "
    verdict += (
        f"Over all layers and strengths: within the controls' range in {counts['within']} of {counts['n']} "
        f"configurations. With {n_controls} control vectors the smallest possible p-value is "
        f"{C.p_floor(n_controls):.2g}, and even a null vector lands beyond all of them with probability "
        f"1/{1 + n_controls} per configuration; "
        + (
            f"a p of 0.05 needs at least {C.controls_needed(0.05)} controls."
            if n_controls < C.controls_needed(0.05)
            else "add controls for finer p-values."
        )
    )
    out.texts["controls"] = verdict
    out.tables.append(
        (
            "controls",
            "Real vector against control vectors at the best layer",
            pd.DataFrame(rows),
            "Controls: random directions with the real vector's norm at each layer, and CAA vectors from "
            "shuffled labels (matching letter permuted within the training set), on the same held-out items "
            "and configurations. p = (1 + controls at least as far in the strength's direction) / "
            "(1 + controls), one-sided; smallest p = 1 / (1 + controls), what this many controls can show at "
            f"best (a p of 0.05 needs {C.controls_needed(0.05)}); within = the real delta does not go further "
            "in the strength's "
            "direction than every control. Every configuration is in tables/controls.csv.",
        )
    )
    out.draws.append(
        (
            "controls",
            "Real vector against control vectors",
            lambda s: _plots().controls_by_depth(comparison, pool, models, datasets, s, real=deltas),
            "",
        )
    )
