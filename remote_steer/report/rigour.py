"""The report's rigour sections (docs/rigour.md): norms, cross-fitted peaks, vector
uncertainty and controls, each a table and a figure, from saved results only.

``report.build_report`` calls ``load_tables`` and ``sections``; everything here works on
the tidy tables the runner writes (``results/norms.parquet``, ``results/controls.parquet``)
and on the merged logit-diff results. Imports no model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from remote_steer.analysis import controls, crossfit, statistics, uncertainty
from remote_steer.report.base import FigurePlan, Table
from remote_steer.report.formats import fixed, integer, num, pct
from remote_steer.rundir import RunDamaged, RunDir

FIGURES = ("norms_by_depth", "crossfit_peaks", "vector_uncertainty", "controls")
SECTIONS = {
    "norms": "## Vector and residual norms",
    "crossfit": "## Honest layer choice: cross-fitted peaks",
    "vector_uncertainty": "## Vector uncertainty: bootstrap vectors",
    "controls": "## Controls: random directions and shuffled labels",
}
CONTROL_KEY = statistics.ITEM_KEY + ["seed", "kind", "vector"]


@dataclass
class Section:
    tables: list[Table] = field(default_factory=list)
    closing: list[str] = field(default_factory=list)  # findings printed after all tables
    numeric: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[FigurePlan] = field(default_factory=list)


def _plots():
    from remote_steer.report import rigour_plots  # matplotlib only when drawing

    return rigour_plots


# tables computed whole after a run (no parts to rebuild them from): a damaged one is left out
LEFT_OUT_WHEN_DAMAGED = ("side_effects", "methods", "ablation")


def load_tables(run_dirs: list[Path], infos, normalise, notes: list[str]) -> dict[str, pd.DataFrame | None]:
    """``results/norms.parquet`` and ``results/controls.parquet`` of every run (absent: None),
    normalised like the logit table (registry names, run and seed columns)."""
    out: dict[str, pd.DataFrame | None] = {}
    for table in ("norms", "controls", "decodability", "side_effects", "methods", "ablation"):  # last 4: depth.py
        frames = []
        for path, info in zip(run_dirs, infos, strict=True):
            try:
                frame = RunDir(path).table(table)
            except RunDamaged as error:
                if table not in LEFT_OUT_WHEN_DAMAGED:
                    raise
                notes.append(f"{error}; left out of this report (the next run computes it again)")
                continue
            if frame is None or frame.empty:
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
        key = ["model", "vector", "dataset", "seed"] if table == "side_effects" else key
        key = ["model", "dataset", "method", "layer", "strength", "seed"] if table == "methods" else key
        key = ["model", "dataset", "seed"] if table == "ablation" else key
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
    control_vectors = extra.get("controls")
    vector = controls.vector_deltas(control_vectors) if control_vectors is not None else None
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
    peaks = crossfit.peak_by_strength(logit)
    consistency = crossfit.peak_consistency(peaks)
    out.numeric.update(peak_by_strength=peaks, peak_consistency=consistency)
    multi = consistency[consistency["n_strengths"] > 1] if len(consistency) else consistency
    if len(multi):
        rows = [
            {
                "model": r.model,
                "dataset": r.dataset,
                "sign": r.sign,
                "strengths": r.n_strengths,
                "peak depth range": f"{fixed(r.min_fraction)}–{fixed(r.max_fraction)}",
                "holds": "yes" if r.spread <= 0.1 else f"no (moves {fixed(r.spread)})",
            }
            for r in _order(multi, models, datasets).itertuples()
        ]
        peak_text = (
            f"Peak depth holds (moves ≤ 0.10 of depth) across strengths in "
            f"{int((multi['spread'] <= 0.1).sum())} of {len(multi)} model × dataset × sign cells."
        )
        out.tables.append(
            Table(
                "peak_by_strength",
                "Does the peak depth hold across strengths?",
                pd.DataFrame(rows),
                "Per model × dataset × sign of strength: the range of best-layer depth over that sign's "
                "strengths (best = largest Glass's delta in the strength's direction); all values in "
                "tables/peak_by_strength.csv.",
            )
        )
        out.tables[-1].after = peak_text
    else:
        out.closing.append(
            "One strength per sign: whether the peak depth holds across strengths cannot be "
            'checked (sweep several strengths per sign, e.g. strength_unit = "residual" with '
            "strengths [-0.5, -0.25, 0.25, 0.5])."
        )
    if norms is None:
        out.figures.append(
            FigurePlan(
                "norms_by_depth",
                "Vector and residual norms by depth",
                None,
                "no results/norms.parquet in these runs (written by runs of this version)",
            )
        )
        return
    out.numeric["norms"] = norms
    at_best = norms.merge(
        best[statistics.CELL + ["best_layer"]].rename(columns={"best_layer": "layer"}), on=statistics.CELL + ["layer"]
    )
    at_best = at_best.drop_duplicates(statistics.CELL + ["layer"])
    spread = norms.groupby(statistics.CELL).agg(ratio_min=("ratio", "min"), ratio_max=("ratio", "max")).reset_index()
    table = _order(at_best.merge(spread, on=statistics.CELL), models, datasets)
    rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "best layer": r.layer,
            "depth": fixed(r.layer_fraction),
            "vector norm": num(r.vector_norm),
            "residual norm": num(r.residual_norm),
            "vector / residual": num(r.ratio),
            "ratio over layers": f"{num(r.ratio_min, 2)}–{num(r.ratio_max, 2)}",
        }
        for r in table.itertuples()
    ]
    out.tables.append(
        Table(
            "norms",
            "Vector and residual-stream norms at the best layer",
            pd.DataFrame(rows),
            "Vector norm = ‖mean difference‖ at that layer; residual norm = mean ‖residual stream‖ (the "
            "decoder-layer output) over the steered positions of the training prompts, read in the "
            'extraction pass. With strength_unit = "raw", strength ±1 adds a vector this fraction of the '
            "residual stream's size; every layer is in tables/norms.csv.",
        )
    )
    out.figures.append(
        FigurePlan(
            "norms_by_depth",
            "Vector and residual norms by depth",
            lambda s: _plots().norms_by_depth(norms, models, datasets, s),
            "",
        )
    )


# -- cross-fitting --------------------------------------------------------------


def _crossfit(out: Section, logit, models, datasets, seed: int) -> None:
    cf = _order(crossfit.crossfit_best_layers(logit, seed), models, datasets)
    out.numeric["crossfit"] = cf
    rows = []
    for r in cf.itertuples():
        rows.append(
            {
                "model": r.model,
                "dataset": r.dataset,
                "in-sample layer": r.best_layer,
                "in-sample depth": fixed(r.best_layer_fraction),
                "in-sample Δ": num(r.glass_delta_pos),
                "half-1 / half-2 layer": f"{integer(r.layer_half_1)} / {integer(r.layer_half_2)}",
                "cross-fitted depth": fixed(r.crossfit_fraction),
                "cross-fitted Δ": num(r.crossfit_glass_delta_pos),
            }
        )
    out.tables.append(
        Table(
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
        out.tables[-1].after = (
            f"Mean in-sample minus cross-fitted Glass's delta: {gap:+.3g} over {len(valid)} "
            f"model × dataset cells; the halves pick the same layer in "
            f"{int(valid['halves_agree'].astype(bool).sum())} of them."
        )
    out.figures.append(
        FigurePlan(
            "crossfit_peaks",
            "In-sample versus cross-fitted Glass's delta at the best layer",
            (lambda s: _plots().crossfit_dumbbell(cf, s)) if len(valid) else None,
            "too few held-out items to split in halves",
        )
    )


def crossfit_depths(best: pd.DataFrame, cf: pd.DataFrame) -> pd.DataFrame:
    """``best`` with ``best_layer_fraction`` replaced by the cross-fitted depth where there is one."""
    merged = best.merge(cf[statistics.CELL + ["crossfit_fraction"]], on=statistics.CELL, how="left")
    merged["best_layer_fraction"] = merged["crossfit_fraction"].fillna(merged["best_layer_fraction"])
    return merged.drop(columns="crossfit_fraction")


# -- vector uncertainty ---------------------------------------------------------


def _uncertainty(out: Section, logit, best, deltas, vector, models, datasets, level) -> None:
    by_seed = uncertainty.best_by_seed(logit)
    if len(by_seed):
        out.numeric["best_by_seed"] = by_seed
        spread = (
            by_seed.groupby(statistics.CELL)
            .agg(
                n=("seed", "nunique"),
                lo=("best_layer_fraction", "min"),
                hi=("best_layer_fraction", "max"),
                dlo=("glass_delta_pos", "min"),
                dhi=("glass_delta_pos", "max"),
            )
            .reset_index()
        )
        out.closing.append(
            "Runs with different seeds pooled as replicates; per model × dataset the seeds' best "
            "depths span: "
            + "; ".join(
                f"{r.model} × {r.dataset}: {fixed(r.lo)}–{fixed(r.hi)} (Δ {num(r.dlo)}–{num(r.dhi)}, {r.n} seeds)"
                for r in spread.itertuples()
            )
            + "."
        )
    boot = vector[vector["kind"] == "bootstrap"] if vector is not None else None
    if boot is None or boot.empty:
        out.figures.append(
            FigurePlan(
                "vector_uncertainty",
                "Glass's delta by depth for bootstrap vectors",
                None,
                "no bootstrap vectors in these runs (set [controls] bootstrap = K)",
            )
        )
        return
    spread = _order(uncertainty.bootstrap_spread(best, boot, level), models, datasets)
    out.numeric["vector_uncertainty"] = spread
    rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "vectors": r.n_vectors,
            "best layer": r.best_layer,
            "same layer": pct(r.share_same_layer),
            "mode": r.mode_layer,
            f"depth {level:.0%}": f"{fixed(r.fraction_low)}–{fixed(r.fraction_high)}",
            "Δ (real vector)": num(r.glass_delta),
            f"Δ at best layer {level:.0%}": f"{num(r.delta_at_best_low)}–{num(r.delta_at_best_high)}",
            f"Δ at own best {level:.0%}": f"{num(r.delta_own_low)}–{num(r.delta_own_high)}",
        }
        for r in spread.itertuples()
    ]
    out.tables.append(
        Table(
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
    out.figures.append(
        FigurePlan(
            "vector_uncertainty",
            "Glass's delta by depth for bootstrap vectors",
            lambda s: _plots().bootstrap_curves(real, boot, best, models, datasets, s),
            "",
        )
    )


# -- controls -------------------------------------------------------------------


def _controls(out: Section, deltas, best, vector, models, datasets) -> None:
    pool = vector[vector["kind"].isin(controls.CONTROL_KINDS)] if vector is not None else None
    if pool is None or pool.empty:
        out.figures.append(
            FigurePlan(
                "controls",
                "Real vector against control vectors",
                None,
                "no control vectors in these runs (set [controls] random = N and/or shuffled = N)",
            )
        )
        return
    comparison = controls.compare(deltas, pool)
    out.numeric["controls"] = comparison
    at_best = comparison.merge(
        best[statistics.CELL + ["best_layer"]].rename(columns={"best_layer": "layer"}), on=statistics.CELL + ["layer"]
    )
    at_best = _order(at_best, models, datasets)
    rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "layer": r.layer,
            "strength": f"{r.strength:+g}",
            "Δ real": num(r.glass_delta),
            "random range": f"{num(r.random_min, 2)}–{num(r.random_max, 2)}",
            "shuffled range": f"{num(r.shuffled_min, 2)}–{num(r.shuffled_max, 2)}",
            "controls": r.n_controls,
            "p": num(r.p_value, 2),
            "smallest p": num(controls.p_floor(r.n_controls), 2),
            "within controls": "yes" if r.within else "no",
        }
        for r in at_best.itertuples()
    ]
    counts = controls.summary(comparison)
    n_controls = int(comparison["n_controls"].max()) if len(comparison) else 0
    head = at_best[at_best["strength"] == at_best.groupby(statistics.CELL)["strength"].transform("max")]
    inside = [f"{r.model} × {r.dataset}" for r in head.itertuples() if r.within is True or r.within == 1.0]
    outside = [
        f"{r.model} × {r.dataset} (p = {num(r.p_value, 2)})"
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
        f"{controls.p_floor(n_controls):.2g}, and even a null vector lands beyond all of them with probability "
        f"1/{1 + n_controls} per configuration; "
        + (
            f"a p of 0.05 needs at least {controls.controls_needed(0.05)} controls."
            if n_controls < controls.controls_needed(0.05)
            else "add controls for finer p-values."
        )
    )
    out.tables.append(
        Table(
            "controls",
            "Real vector against control vectors at the best layer",
            pd.DataFrame(rows),
            "Controls: random directions with the real vector's norm at each layer, and CAA vectors from "
            "shuffled labels (matching letter permuted within the training set), on the same held-out items "
            "and configurations. p = (1 + controls at least as far in the strength's direction) / "
            "(1 + controls), one-sided; smallest p = 1 / (1 + controls), what this many controls can show at "
            f"best (a p of 0.05 needs {controls.controls_needed(0.05)}); within = the real delta does not go further "
            "in the strength's "
            "direction than every control. Every configuration is in tables/controls.csv.",
            after=verdict,
        )
    )
    out.figures.append(
        FigurePlan(
            "controls",
            "Real vector against control vectors",
            lambda s: _plots().controls_by_depth(comparison, pool, models, datasets, s, real=deltas),
            "",
        )
    )
