"""``remote-steer report``: the study's tables and figures rebuilt from saved results.

Reads ``results/logit_diff.parquet`` (required), ``results/generation.parquet``
(optional) and ``manifest.json`` of one or more run directories, merges them, and
writes ``report.md``, ``figures/*.png|svg`` and ``tables/*.csv`` into an output
directory. Loads no model: nothing here imports torch, transformers or nnsight.

Merging: runs are concatenated in the order given. A row whose (model, dataset,
item_id, layer, strength) already came from an earlier run is dropped, and the report
says how many were dropped from which run: the first run listed wins. Model names are
mapped to the registry's short names (``Qwen/Qwen3-4B`` → ``Qwen3-4B``) so a local run
that used a hub id and a remote run that used the short name merge into one model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pandas as pd

from remote_steer.analysis import statistics
from remote_steer.data.concepts import STUDY_CONCEPTS
from remote_steer.models.registry import QWEN3_FAMILY, all_cards, lookup
from remote_steer.report import depth, rigour
from remote_steer.report.base import (  # noqa: F401 - also importable from here, as before
    GENERATION_COLUMNS,
    LOGIT_COLUMNS,
    Figure,
    FigurePlan,
    Report,
    ResultsError,
    RunInfo,
    Table,
    _canonical,
    _normalise,
    markdown_table,
    mixed_note,
    read_run,
)
from remote_steer.report.formats import ci, fixed, num, pct, signed
from remote_steer.rundir import RunDir, atomic_write, writable_dir

TAIL_MIN_SD = 0.1  # a tail must move against by more than this many baseline SDs to be flagged: 5th
# and 95th percentiles of a few dozen items are noisy, and without a floor noise alone flags cells
FIGURES = (
    "logit_diff_violins",
    "glass_delta_heatmap",
    "glass_delta_by_depth",
    "steerability",
    "generation_vs_logit_layers",
    "logit_vs_generation_scatter",
    "validity_by_size",
)


@dataclass
class StudyResults:
    logit: pd.DataFrame
    generation: pd.DataFrame | None
    runs: list[RunInfo]
    notes: list[str] = field(default_factory=list)


# -- loading and merging -------------------------------------------------------


def load_run(path: Path, notes: list[str] | None = None) -> tuple[RunInfo, pd.DataFrame, pd.DataFrame | None]:
    path = Path(path)
    run = read_run(path, notes if notes is not None else [])
    if run.logit is None:
        raise ResultsError(
            f"{path}: no results/logit_diff.parquet; expected a run directory written by `remote-steer run`"
        )
    info = run.info
    return (
        info,
        _normalise(run.logit, run.training, info),
        None if run.generation is None else _normalise(run.generation, run.training, info),
    )


def _merge(frames: list[pd.DataFrame], runs: list[RunInfo], what: str, notes: list[str]) -> pd.DataFrame:
    merged = pd.concat(frames, ignore_index=True)
    dup = merged.duplicated(statistics.ITEM_KEY + ["seed"], keep="first")
    if dup.any():
        for run, count in merged.loc[dup, "run"].value_counts(sort=False).items():
            notes.append(
                f"{what}: {count} row(s) of run '{run}' repeat a (model, dataset, item, layer, strength) "
                "already read from an earlier run and were dropped (the first run listed wins)."
            )
        merged = merged.loc[~dup].reset_index(drop=True)
    mixed = merged.groupby(statistics.CELL)["run"].nunique()
    for (model, dataset), n in mixed[mixed > 1].items():
        notes.append(f"{what}: {model} × {dataset} combines rows from {n} runs.")
    return merged


def load_runs(run_dirs: list[Path]) -> StudyResults:
    """Read and merge run directories (see module docstring for the duplicate rule)."""
    if not run_dirs:
        raise ResultsError(
            "no run directory given; expected at least one directory containing results/logit_diff.parquet"
        )
    notes: list[str] = []
    runs: list[RunInfo] = []
    logits: list[pd.DataFrame] = []
    generations: list[pd.DataFrame] = []
    for path in run_dirs:
        info, logit, generation = load_run(path, notes)
        if any(r.path == info.path for r in runs):
            notes.append(f"{path}: listed twice; read once.")
            continue
        if len({r.name for r in runs} | {info.name}) == len(runs):  # two runs share a spec name
            info.name = f"{info.name} ({info.path.parent.name})"
            logit["run"] = info.name
            if generation is not None:
                generation["run"] = info.name
        runs.append(info)
        if logit.empty:
            notes.append(f"{path}: results/logit_diff.parquet has no rows.")
        else:
            logits.append(logit)
        if generation is not None and not generation.empty:
            generations.append(generation)
        if info.status not in ("complete", "unknown (no manifest)"):
            notes.append(f"run '{info.name}' has status '{info.status}': its results may be partial.")
    if not logits:
        raise ResultsError(
            f"{', '.join(str(p) for p in run_dirs)}: results/logit_diff.parquet has no rows; "
            "expected the results of at least one finished chunk"
        )
    renamed = sorted({f"{m} → {_canonical(m)}" for r in runs for m in r.models if _canonical(m) != m})
    if renamed:
        notes.append("model names mapped to the registry's: " + ", ".join(renamed) + ".")
    if (mixed := mixed_note(runs)) is not None:
        notes.append(mixed)
    logit = _merge(logits, runs, "logit diff", notes)
    generation = _merge(generations, runs, "generation", notes) if generations else None
    if logit["seed"].astype(str).nunique() > 1:  # replicates: an item of two seeds is two units
        seeds = sorted(logit["seed"].astype(str).unique())
        notes.append(
            f"runs with seeds {', '.join(seeds)} pooled as replicates (an item held out under two seeds "
            "counts once per seed)."
        )
        logit["item_id"] = "seed" + logit["seed"].astype(str) + ":" + logit["item_id"]
        if generation is not None:
            generation["item_id"] = "seed" + generation["seed"].astype(str) + ":" + generation["item_id"]
    if generation is None:
        notes.append("no results/generation.parquet in any run: generation tables and figures are left out.")
    return StudyResults(logit, generation, runs, notes)


# -- ordering and formatting ---------------------------------------------------


def _model_order(models) -> list[str]:
    rank = {c.name: i for i, c in enumerate(all_cards())}
    return sorted(set(models), key=lambda m: (m not in rank, rank.get(m, 0), m))


def _dataset_order(datasets) -> list[str]:
    rank = {c: i for i, c in enumerate(STUDY_CONCEPTS)}
    return sorted(set(datasets), key=lambda d: (d not in rank, rank.get(d, 0), d))


def logit_seeds(logit: pd.DataFrame) -> int:
    return int(logit["seed"].astype(str).nunique()) if "seed" in logit.columns else 1


# -- building ------------------------------------------------------------------


def default_out_dir(run_dirs: list[Path]) -> Path:
    """``RUN_DIR/report`` for one run; ``outputs/report-<UTC timestamp>`` for several."""
    if len(run_dirs) == 1:
        return RunDir(run_dirs[0]).report_dir
    return Path("outputs") / f"report-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def build_report(
    run_dirs: list[Path],
    out_dir: Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    figures: bool = True,
) -> Report:
    """Load, analyse, draw and write. Returns what was written (for the CLI to print).

    ``figures=False`` writes the tables only (fast; the figures are listed as not drawn).
    """
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(run_dirs)
    for path in run_dirs:  # a missing run is named before the output directory is made
        if not Path(path).is_dir():
            raise ResultsError(
                f"{path}: not a directory; expected a run directory containing results/logit_diff.parquet"
            )
    made = next((p for p in [out_dir, *out_dir.parents] if not p.exists() and p.parent.exists()), None)
    writable_dir(out_dir, "the report")  # read-only or missing: one line before any analysis
    try:
        return _build(run_dirs, out_dir, n_boot, seed, level, figures)
    except BaseException:
        if made is not None:  # a failed report leaves no directory it made
            shutil.rmtree(made, ignore_errors=True)
        raise


def _build(run_dirs: list[Path], out_dir: Path, n_boot: int, seed: int, level: float, figures: bool) -> Report:
    if run_dirs and not any(RunDir(p).has_table("logit_diff") for p in run_dirs):
        from remote_steer.report.generation import build_generation_only

        _clear_own(out_dir)
        return build_generation_only([Path(p) for p in run_dirs], out_dir)  # a generation-only run
    study = load_runs([Path(p) for p in run_dirs])
    extra = rigour.load_tables([r.path for r in study.runs], study.runs, _normalise, study.notes)
    controls = extra.get("controls")
    if controls is not None and logit_seeds(study.logit) > 1:
        extra["controls"] = controls.assign(item_id="seed" + controls["seed"].astype(str) + ":" + controls["item_id"])
    logit, notes = study.logit, list(study.notes)
    models = _model_order(logit["model"])
    datasets = _dataset_order(logit["dataset"])
    training = logit.groupby("model")["training"].first().to_dict()
    _coverage_notes(logit, models, datasets, training, notes)

    boot = statistics.bootstrap_cells(logit, n_boot, seed)
    deltas = statistics.glass_deltas_ci(logit, boot=boot, level=level)
    best = statistics.best_layers_ci(logit, boot=boot, level=level, deltas=deltas)
    best = _ordered(best, models, datasets)
    per_model = statistics.model_summary(logit, best, boot, level, deltas=deltas)
    slopes = statistics.item_slopes(logit)
    steer = statistics.steerability(logit, slopes)
    tails = statistics.tail_shifts(logit, min_shift_sd=TAIL_MIN_SD)
    numeric: dict[str, pd.DataFrame] = dict(
        glass_deltas=deltas, best_layers=best, model_summary=per_model, steerability=steer, tail_shifts=tails
    )
    tables = [_table_logit(per_model, level), _table_delta(per_model, level), _table_best(best, level)]
    texts: dict[str, str] = {}
    rigour_section = rigour.sections(logit, best, deltas, extra, models, datasets, seed, level)
    numeric.update(rigour_section.numeric)
    n_layers = logit.groupby("model")["n_layers"].first().to_dict() if "n_layers" in logit else {}
    tables += _tables_depth(
        rigour.crossfit_depths(best, rigour_section.numeric["crossfit"]), training, texts, numeric, n_layers
    )
    at_best = best[statistics.CELL + ["best_layer"]].rename(columns={"best_layer": "layer"})
    tables.append(_table_steer(steer.merge(at_best, on=statistics.CELL + ["layer"]), models, datasets))
    tables.append(_table_tails(tails, best, texts))
    rates = joined = None
    if study.generation is not None:
        rates = statistics.generation_rates(study.generation)
        joined = statistics.logit_vs_generation(deltas, rates)
        per_cell, per_dataset = statistics.effect_agreement(joined, best, rates)
        numeric.update(
            generation_rates=rates, logit_vs_generation=joined, effect_by_cell=per_cell, effect_by_dataset=per_dataset
        )
        tables += _tables_generation(per_cell, per_dataset, datasets)
    tables += rigour_section.tables
    depth_section = depth.section(extra.get("decodability"), logit, deltas, best, models)
    side = depth.side_effects_section(extra.get("side_effects"), models)
    methods = depth.methods_section(extra.get("methods"), models)
    ablation = depth.ablation_section(extra.get("ablation"), models)
    tables += depth_section.tables + methods.tables + side.tables + ablation.tables
    for section in (depth_section, methods, side, ablation):
        numeric.update(section.numeric)
    from remote_steer.analysis.letters import letter_effects, load_letter_control, report_table

    control = load_letter_control([r.path for r in study.runs])
    if control is not None:
        control["model"] = control["model"].astype(str).map(_canonical)
    numeric["letter_effects"] = letter_effects(logit, control)
    if (letter_table := report_table(numeric["letter_effects"], best)) is not None:
        tables.append(Table(*letter_table))
    if study.generation is not None:
        from remote_steer.report.generation import generation_tables, write_tables_csv

        tables += generation_tables(study.generation, logit)
        write_tables_csv(out_dir, study.generation, logit)

    for number, table in enumerate(tables, start=1):  # numbered after the fact: absent tables leave no gaps
        table.title = f"Table {number}. {table.title}"
    figures_dir = out_dir / "figures"
    _clear_own(out_dir)
    item_slopes_best = slopes.merge(at_best, on=statistics.CELL + ["layer"])
    draw: list[FigurePlan] = [
        FigurePlan(
            "logit_diff_violins",
            "Per-item logit diff at baseline, positive and negative strength",
            lambda s: _p().logit_diff_violins(logit, best, models, datasets, s),
            "",
        ),
        FigurePlan(
            "glass_delta_heatmap",
            "Glass's delta heatmap, model × dataset",
            lambda s: _p().delta_heatmap(best, models, datasets, s),
            "",
        ),
        FigurePlan(
            "glass_delta_by_depth",
            "Glass's delta against layer depth, by training method",
            lambda s: _p().delta_by_depth(deltas, training, models, datasets, s),
            "",
        ),
        FigurePlan(
            "steerability",
            "Per-item steerability and anti-steerable items at the best layer",
            lambda s: _p().steerability_strips(item_slopes_best, models, datasets, s),
            "",
        ),
    ]
    no_gen = "no generation results in these runs"
    draw.append(
        FigurePlan(
            "generation_vs_logit_layers",
            "Generation vs logit-diff layer curves",
            (lambda s: _p().generation_vs_logit_layers(deltas, rates, models, datasets, s))
            if rates is not None
            else None,
            no_gen,
        )
    )
    scatter_ok = joined is not None and joined[["glass_delta", "behavior_change"]].notna().all(axis=1).any()
    draw.append(
        FigurePlan(
            "logit_vs_generation_scatter",
            "Logit-diff effect vs generation effect",
            (lambda s: _p().effect_scatter(joined, datasets, s)) if scatter_ok else None,
            no_gen if joined is None else "no model × dataset × layer × strength in both tables",
        )
    )
    draw.append(
        FigurePlan(
            "validity_by_size",
            "Generation validity by model size and strength",
            (lambda s: _p().validity_by_size(statistics.validity_by_model(rates), _sizes(rates["model"]), s))
            if rates is not None
            else None,
            no_gen,
        )
    )
    draw += rigour_section.figures + depth_section.figures + methods.figures + side.figures
    drawn = []
    for plan in draw:
        fn, why = (plan.draw, plan.skipped) if figures else (None, "figures turned off")
        if fn is None:
            drawn.append(Figure(plan.key, plan.title, [], why))
            continue
        drawn.append(Figure(plan.key, plan.title, fn(figures_dir / plan.key)))

    for name, frame in numeric.items():
        path = out_dir / "tables" / f"{name}.csv"
        atomic_write(path, partial(frame.to_csv, index=False))
    report = Report(out_dir, out_dir / "report.md", tables, drawn, notes, study.runs, texts, rigour_section.closing)
    text = render_markdown(report, n_boot=n_boot, seed=seed, level=level)
    atomic_write(report.path, lambda tmp: tmp.write_text(text))
    return report


def _p():
    from remote_steer.report import plots  # matplotlib loads only when a figure is drawn

    return plots


def _clear_own(out_dir: Path) -> None:
    """Remove figures a previous report wrote here, so a skipped figure cannot go stale."""
    for key in FIGURES + rigour.FIGURES + depth.FIGURES:
        for suffix in (".png", ".svg"):
            (out_dir / "figures" / f"{key}{suffix}").unlink(missing_ok=True)


def _ordered(frame: pd.DataFrame, models: list[str], datasets: list[str]) -> pd.DataFrame:
    key = frame["model"].map({m: i for i, m in enumerate(models)}) * 1000 + frame["dataset"].map(
        {d: i for i, d in enumerate(datasets)}
    )
    return frame.assign(_k=key).sort_values("_k").drop(columns="_k").reset_index(drop=True)


def _sizes(models) -> dict[str, float | None]:
    return {m: (card.params_total_b if (card := lookup(m)) is not None else None) for m in set(models)}


def _coverage_notes(logit: pd.DataFrame, models, datasets, training, notes: list[str]) -> None:
    present = set(map(tuple, logit[statistics.CELL].drop_duplicates().to_numpy()))
    missing = [f"{m} × {d}" for m in models for d in datasets if (m, d) not in present]
    if missing:
        notes.append("no results for: " + ", ".join(missing) + ".")
    study_models = [c.name for c in QWEN3_FAMILY if c.name not in models]
    if study_models:
        notes.append("study models not in these results: " + ", ".join(study_models) + ".")
    study_sets = [d for d in STUDY_CONCEPTS if d not in datasets]
    if study_sets:
        notes.append("study datasets not in these results: " + ", ".join(study_sets) + ".")
    toys = [m for m in models if m.startswith("toy/") or training.get(m) == "random (toy)"]
    if toys:
        notes.append(f"{', '.join(toys)}: random-weight toys; their numbers say nothing about Qwen3.")


# -- tables --------------------------------------------------------------------


def _table_logit(per_model: pd.DataFrame, level: float) -> Table:
    rows = [
        {
            "model": r.model,
            "training": r.training,
            "datasets": r.n_datasets,
            "strength": signed(r.strength_pos),
            "baseline logit diff": num(r.baseline_mean_pos),
            "steered logit diff": num(r.steered_mean_pos),
            "change": num(r.logit_diff_change_pos),
        }
        for r in per_model.itertuples()
    ]
    return Table(
        "logit_diff",
        "Average logit diff per model under positive steering",
        pd.DataFrame(rows),
        "Mean over datasets of the mean logit diff (matching − other answer) at each dataset's best layer, "
        "at the strongest positive strength, and of the same items unsteered.",
        main=True,
    )


def _table_delta(per_model: pd.DataFrame, level: float) -> Table:
    rows = [
        {
            "model": r.model,
            "training": r.training,
            "datasets": r.n_datasets,
            f"Δ at {signed(r.strength_pos)}": ci(
                r.glass_delta_pos, r.glass_delta_pos_ci_low, r.glass_delta_pos_ci_high
            ),
            f"Δ at {signed(r.strength_neg)}": ci(
                r.glass_delta_neg, r.glass_delta_neg_ci_low, r.glass_delta_neg_ci_high
            ),
        }
        for r in per_model.itertuples()
    ]
    frame = pd.DataFrame(rows).fillna("—")
    return Table(
        "glass_delta",
        "Average Glass's delta per model",
        frame,
        f"Mean over datasets of Glass's delta at each dataset's best layer, with a {level:.0%} bootstrap "
        "interval (items resampled within each dataset). The layer is picked on the same items, so these "
        "are optimistic.",
        main=True,
    )


def _table_best(best: pd.DataFrame, level: float) -> Table:
    rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "best layer": r.best_layer,
            "depth": fixed(r.best_layer_fraction),
            "depth CI": f"[{fixed(r.best_fraction_ci_low)}, {fixed(r.best_fraction_ci_high)}]",
            "stability": pct(r.best_layer_stability),
            "mode": r.best_layer_mode,
            f"Δ at {signed(r.pos_strength)}": ci(
                r.glass_delta_pos, r.glass_delta_pos_ci_low, r.glass_delta_pos_ci_high
            ),
            f"Δ at {signed(r.neg_strength)}": ci(
                r.glass_delta_neg, r.glass_delta_neg_ci_low, r.glass_delta_neg_ci_high
            ),
            "items": r.n_items,
        }
        for r in best.itertuples()
    ]
    full = pd.DataFrame(rows).fillna("—")
    terminal = pd.DataFrame(
        {
            "model": full["model"],
            "dataset": full["dataset"],
            "layer": full["best layer"],
            "depth [CI]": full["depth"] + "\n" + full["depth CI"],
            "stability": full["stability"],
            **{c: full[c] for c in full.columns if c.startswith("Δ")},
        }
    )
    return Table(
        "best_layers",
        "Best layer per model × dataset",
        full,
        "Best layer = largest Glass's delta at the strongest positive strength; depth = (layer + 1) / "
        "number of layers (the depth of the layer's output; the last layer is 1). "
        f"Δ: Glass's delta with its {level:.0%} bootstrap CI. Depth CI, stability (share of "
        "resamples that pick the same layer) and mode (the layer picked most often) come from "
        "re-picking the layer in every bootstrap resample.",
        main=True,
        terminal=terminal,
    )


def matched_base(training: dict[str, str], n_layers: dict[str, int]) -> str | None:
    """The base model shared by every RL and every distilled model, when they also share their
    depth (a matched design: post-training is the only difference); None otherwise."""
    from remote_steer.models.registry import base_model

    compared = [m for m, t in training.items() if t in ("rl", "distilled")]
    cards = [lookup(m) for m in compared]
    if not compared or any(c is None for c in cards):
        return None
    bases = {base_model(c) for c in cards if c is not None}
    depths = {n_layers.get(m) for m in compared}
    if len(bases) != 1 or "—" in bases or len(depths) != 1 or None in depths:
        return None
    return bases.pop()


def _table_matched(
    best: pd.DataFrame, training: dict[str, str], base: str, n_layers: int, texts: dict[str, str], numeric
) -> Table:
    """RL versus distilled on one base: per dataset the paired difference in best layer (one
    depth axis: same layers), and an exact sign-flip test over datasets."""
    frame = best.assign(training=best["model"].map(training))
    frame = frame[frame["training"].isin(["rl", "distilled"])]
    depth = frame.pivot_table(index="dataset", columns="training", values="best_layer_fraction", aggfunc="mean")
    order = list(dict.fromkeys(best["dataset"]))
    depth = depth.reindex([d for d in order if d in depth.index])
    paired = pd.DataFrame(
        {
            "dataset": depth.index,
            "rl_fraction": depth["rl"].to_numpy(),
            "distilled_fraction": depth["distilled"].to_numpy(),
        }
    )
    paired["difference"] = paired["rl_fraction"] - paired["distilled_fraction"]
    paired["layer_difference"] = paired["difference"] * n_layers  # one axis: depth × the shared layer count
    test = statistics.sign_flip_test(paired["difference"])
    numeric.update(matched_pair=paired, paired_test=pd.DataFrame([test.__dict__]))
    rl = ", ".join(sorted(m for m, t in training.items() if t == "rl"))
    distilled = ", ".join(sorted(m for m, t in training.items() if t == "distilled"))
    layers = paired["layer_difference"].mean()
    texts["permutation"] = (
        f"Matched design: {rl} (RL) and {distilled} (distilled) were both post-trained from {base} and share its "
        f"{n_layers} layers, so depth is one axis and each dataset gives a paired difference. RL − distilled: mean "
        f"{test.mean:+.3f} of the depth ({layers:+.1f} layers), RL deeper in {test.n_positive} of {test.n} datasets. "
        f"Exact two-sided sign-flip test over the {test.n_assignments} sign patterns of the {test.n} paired "
        f"differences: p = {test.p_value:.3f} (the smallest possible is {test.min_p:.3f}). The datasets share the "
        "same two models, so they are not independent replicates: this is evidence about these two post-trainings "
        "of one base, not about RL in general."
    )
    return Table(
        "depth_by_dataset",
        f"RL versus distilled on one base ({base}): best layer per dataset, paired",
        pd.DataFrame(
            [
                {
                    "dataset": r.dataset,
                    "RL depth": fixed(r.rl_fraction),
                    "distilled depth": fixed(r.distilled_fraction),
                    "RL − distilled": fixed(r.difference),
                    "RL − distilled (layers)": f"{r.layer_difference:+.1f}",
                }
                for r in paired.itertuples()
            ]
        ),
        f"Same base, same {n_layers} layers: depths compare directly, and a depth difference × {n_layers} is a "
        "difference in layers. Depths cross-fitted as in the table above.",
        main=True,
    )


def _tables_depth(
    best: pd.DataFrame,
    training: dict[str, str],
    texts: dict[str, str],
    numeric: dict[str, pd.DataFrame],
    n_layers: dict[str, int] | None = None,
) -> list[Table]:
    series = pd.Series(training)
    by_model = statistics.depth_by_model(best, series)
    by_dataset = statistics.depth_by_dataset(best, series)
    order = {d: i for i, d in enumerate(dict.fromkeys(best["dataset"]))}  # best is in report order
    by_dataset = by_dataset.sort_values("dataset", key=lambda s: s.map(order)).reset_index(drop=True)
    numeric.update(depth_by_model=by_model, depth_by_dataset=by_dataset)
    model_rows = [
        {
            "model": r.model,
            "training": r.training,
            "datasets": r.n_datasets,
            "mean best depth": fixed(r.mean_best_fraction),
            "SD across datasets": fixed(r.sd_best_fraction),
            "range": f"{fixed(r.min_best_fraction)}–{fixed(r.max_best_fraction)}",
        }
        for r in by_model.itertuples()
    ]
    tables = [
        Table(
            "depth_by_model",
            "Where steering peaks: best-layer depth per model",
            pd.DataFrame(model_rows),
            "Depth = (best layer + 1) / number of layers, cross-fitted (the mean of the depths "
            "picked on each half of the held-out items, see the cross-fitting section), averaged over datasets.",
            main=True,
        )
    ]
    groups = set(by_model["training"])
    base = matched_base(training, n_layers or {}) if {"rl", "distilled"} <= groups else None
    if base is not None:
        depth = next(n for m, n in (n_layers or {}).items() if training.get(m) in ("rl", "distilled"))
        tables.append(_table_matched(best, training, base, int(depth), texts, numeric))
    elif {"rl", "distilled"} <= groups:
        test = statistics.permutation_test(by_model["mean_best_fraction"], by_model["training"], "rl", "distilled")
        numeric["permutation_test"] = pd.DataFrame([test.__dict__])
        diff = by_dataset["difference"].dropna()
        rows = [
            {
                "dataset": r.dataset,
                "RL mean depth": fixed(r.rl_mean_fraction),
                "distilled mean depth": fixed(r.distilled_mean_fraction),
                "RL − distilled": fixed(r.difference),
            }
            for r in by_dataset.itertuples()
        ]
        tables.append(
            Table(
                "depth_by_dataset",
                "RL versus distilled: best-layer depth per dataset",
                pd.DataFrame(rows),
                "Spread across datasets of the RL − distilled difference: "
                f"mean {fixed(diff.mean())}, SD {fixed(diff.std(ddof=1) if len(diff) > 1 else float('nan'))}, "
                f"RL deeper in {int((diff > 0).sum())} of {len(diff)} datasets.",
                main=True,
            )
        )
        texts["permutation"] = (
            f"RL-trained models ({test.n_a}) peak at mean depth {test.mean_a:.2f}, distilled models ({test.n_b}) at "
            f"{test.mean_b:.2f}: difference {test.observed:+.2f}. {'Exact' if test.exact else 'Monte Carlo'} two-sided "
            f"permutation test over {test.n_assignments} relabellings of the models: p = {test.p_value:.3f}. "
            f"With only {test.n_a + test.n_b} models the test has little power: the smallest p-value any labelling "
            f"could give is {test.min_p:.3f}, so "
            f"{'it cannot reach 0.05 at all' if test.min_p > 0.05 else 'only an extreme split reaches 0.05'}. "
            "Treat the direction and size of the difference, and its consistency across datasets "
            "(the per-dataset table), as the "
            "evidence, not the p-value. The unit is the model; datasets are not independent replicates."
        )
    else:
        texts["permutation"] = (
            f"RL versus distilled needs both groups; these results have {', '.join(sorted(groups))}. "
            "Permutation test left out."
        )
    return tables


def _table_steer(steer_best: pd.DataFrame, models, datasets) -> Table:
    frame = _ordered(steer_best, models, datasets)
    rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "layer": r.layer,
            "items": r.n_items,
            "mean slope": num(r.mean_slope),
            "median slope": num(r.median_slope),
            "anti-steerable": f"{r.n_anti_steerable} ({pct(r.anti_steerable_fraction)})",
        }
        for r in frame.itertuples()
    ]
    return Table(
        "steerability",
        "Per-item steerability at the best layer",
        pd.DataFrame(rows),
        "Slope = least-squares slope of an item's logit diff against strength (baseline as strength 0), as in "
        "Tan et al. 2024. Anti-steerable = slope < 0: the item moves against the behaviour when steered towards it.",
    )


def _table_tails(tails: pd.DataFrame, best: pd.DataFrame, texts: dict[str, str]) -> Table:
    at_best = tails.merge(
        best[statistics.CELL + ["best_layer"]].rename(columns={"best_layer": "layer"}), on=statistics.CELL + ["layer"]
    )
    at_best = _ordered(at_best, list(dict.fromkeys(best["model"])), list(dict.fromkeys(best["dataset"])))
    rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "layer": r.layer,
            "strength": signed(r.strength),
            "mean shift": num(r.mean_shift),
            "p5 shift": num(r.p5_shift),
            "p95 shift": num(r.p95_shift),
            "flag": f"⚠ {r.tail_against} against" if r.flagged else "",
        }
        for r in at_best.itertuples()
    ]
    flagged = tails[tails["flagged"]]
    texts["tails"] = (
        f"{len(flagged)} of {len(tails)} model × dataset × layer × strength configurations move the mean "
        "the right way while a tail (5th or 95th percentile) moves the wrong way by more than "
        f"{TAIL_MIN_SD:g} baseline SD; all are listed in tables/tail_shifts.csv (column `flagged`)."
    )
    return Table(
        "tail_shifts",
        "Tail shifts at the best layer",
        pd.DataFrame(rows),
        "Shift = steered − baseline, in logit-diff units. ⚠: the mean moves with the strength's sign while "
        f"the named percentile moves against it by more than {TAIL_MIN_SD:g} baseline SD: a minority of "
        "items pushed the wrong way.",
    )


def _tables_generation(per_cell: pd.DataFrame, per_dataset: pd.DataFrame, datasets) -> list[Table]:
    order = {d: i for i, d in enumerate(datasets)}
    per_dataset = per_dataset.assign(_k=per_dataset["dataset"].map(order)).sort_values("_k")
    rows = [
        {
            "dataset": r.dataset,
            "models": r.n_models,
            "Δ logit (+)": num(r.glass_delta_pos),
            "behaviour change (+)": num(r.behavior_change_pos),
            "behaviour change (−)": num(r.behavior_change_neg),
            "r (+)": num(r.pearson_pos, 2),
            "ρ (+)": num(r.spearman_pos, 2),
            "points (+)": r.n_points_pos,
        }
        for r in per_dataset.itertuples()
    ]
    cell_rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "best layer": r.best_layer,
            "gen. layer": r.generation_layer,
            "Δ logit (+)": num(r.glass_delta_pos),
            "baseline rate": pct(r.baseline_behavior_rate),
            "change (+)": num(r.behavior_change_pos),
            "change (−)": num(r.behavior_change_neg),
            "valid (+)": pct(r.valid_rate_pos),
            "valid (−)": pct(r.valid_rate_neg),
        }
        for r in per_cell.itertuples()
    ]
    return [
        Table(
            "logit_vs_generation",
            "Logit-diff effect versus generation behaviour change, per dataset",
            pd.DataFrame(rows),
            "Means over models at each model's best logit-diff layer (the nearest generated "
            "layer). r, ρ: Pearson and Spearman correlation between Glass's delta and behaviour change over all "
            "model × layer points at positive strength.",
            main=True,
        ),
        Table(
            "generation_by_cell",
            "Generation at the best layer, per model × dataset",
            pd.DataFrame(cell_rows),
            "Behaviour rate = share of valid answers that match the behaviour; change = "
            "steered − unsteered rate on the same items; valid = share of answers that are a clean A or B.",
        ),
    ]


# -- markdown ------------------------------------------------------------------


def render_markdown(report: Report, n_boot: int, seed: int, level: float) -> str:
    out = [
        "# remote-steer report",
        "",
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} from saved results only (no model loaded).",
        "",
        "## Sources",
        "",
    ]
    out.append(
        markdown_table(
            pd.DataFrame(
                [
                    {
                        "run": r.name,
                        "path": str(r.path),
                        "git commit": r.git_commit,
                        "status": r.status,
                        "created": r.created_at,
                        "seed": r.seed,
                        "models": ", ".join(r.models),
                        "computed on": r.where,
                        "datasets": ", ".join(r.datasets),
                        "logit rows": r.logit_rows,
                        "generation rows": r.generation_rows,
                    }
                    for r in report.runs
                ]
            )
        )
    )
    if report.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    section = {
        "depth_by_model": "## Where steering peaks: RL versus distilled",
        "steerability": "## Beyond the means: steerability and tails",
        "logit_vs_generation": "## Logit diff versus generation",
        **rigour.SECTIONS,
    }
    out += ["## Logit diff and Glass's delta", ""]
    for table in report.tables:
        if table.key in section:
            out += [section[table.key], ""]
        out += [f"### {table.title}", "", markdown_table(table.frame)]
        if table.caption:
            out += [f"_{table.caption}_", ""]
        if table.key == "depth_by_dataset" or (
            table.key == "depth_by_model" and not any(t.key == "depth_by_dataset" for t in report.tables)
        ):
            out += [report.texts.get("permutation", ""), ""]
        if table.key == "tail_shifts":
            out += [report.texts.get("tails", ""), ""]
        if table.after:
            out += [table.after, ""]
    for text in report.closing:
        out += [text, ""]
    out += ["## Figures", ""]
    for figure in report.figures:
        if figure.skipped:
            out += [f"- **{figure.title}**: not drawn ({figure.skipped}).", ""]
            continue
        png, svg = (p.relative_to(report.out_dir).as_posix() for p in figure.paths)
        out += [f"### {figure.title}", "", f"![{figure.title}]({png})", "", f"[SVG]({svg})", ""]
    out += [
        "## Method",
        "",
        "- **Glass's delta** = (mean steered − mean baseline) / SD(baseline), SD with ddof = 1, per model × dataset "
        "× layer × strength; the baseline is the same items unsteered.",
        f"- **Bootstrap**: {n_boot} resamples of items with replacement within each model × dataset (seed {seed}, "
        f"the same resample for every layer and strength), percentile {level:.0%} intervals. For the best layer: the "
        "layer picked in each resample gives the stability (share picking the point-estimate layer), the mode and an "
        "interval on depth.",
        "- **Steerability**: per item, the least-squares slope of logit diff against strength with the baseline as "
        "strength 0 (Tan et al. 2024). **Anti-steerable**: slope < 0.",
        "- **Tail shifts**: change of the 5th and 95th percentiles (steered − baseline); flagged where the mean "
        f"moves with the strength's sign and a percentile moves against it by more than {TAIL_MIN_SD:g} baseline SD.",
        "- **Permutation test**: statistic = mean best-layer depth (averaged over datasets) of RL minus distilled "
        "models; every relabelling of models that keeps the group sizes; two-sided.",
        "- Full numeric tables: `tables/*.csv`.",
        "",
    ]
    return "\n".join(out)
