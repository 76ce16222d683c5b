"""Generation tables of the report, and the report of a run that only generated.

Two readings of the behaviour rate, always side by side and always named:

- **among valid**: matching answers / valid answers (what the model chose when it
  chose);
- **invalid = no**: matching answers / all answers, an invalid answer counted as
  not showing the behaviour (the study's stricter reading; a collapse under strong
  steering then lowers the rate).

**Answer slot vs generation** compares, per item, the logit diff at the answer
slot (which answer the model's next-token logits prefer right after the prompt)
with the answer it actually wrote (after thinking, when on). Where they disagree
the logit diff is not measuring the behaviour the model shows.

Loads no model.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from remote_steer.report.base import (
    Report,
    ResultsError,
    Table,
    _normalise,
    markdown_table,
    mixed_note,
    read_run,
)
from remote_steer.report.formats import pct, percentage_points
from remote_steer.rundir import atomic_write


def _bool(series: pd.Series) -> pd.Series:
    return series.fillna(False).astype(bool)


def rates(generation: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset × layer × strength: validity and both behaviour rates, steered and baseline."""
    g = generation.assign(
        v=_bool(generation["valid"]),
        m=_bool(generation["matches_behavior"]) & _bool(generation["valid"]),
        bv=_bool(generation["baseline_valid"]),
        bm=_bool(generation["baseline_matches"]) & _bool(generation["baseline_valid"]),
    )
    out = (
        g.groupby(["model", "dataset", "layer", "strength"], sort=True)
        .agg(
            layer_fraction=("layer_fraction", "first"),
            n_items=("v", "size"),
            n_valid=("v", "sum"),
            n_match=("m", "sum"),
            n_base_valid=("bv", "sum"),
            n_base_match=("bm", "sum"),
        )
        .reset_index()
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out["valid_rate"] = out["n_valid"] / out["n_items"]
        out["behavior_rate_valid"] = (out["n_match"] / out["n_valid"]).where(out["n_valid"] > 0)
        out["behavior_rate_all"] = out["n_match"] / out["n_items"]
        out["baseline_valid_rate"] = out["n_base_valid"] / out["n_items"]
        out["baseline_behavior_rate_valid"] = (out["n_base_match"] / out["n_base_valid"]).where(out["n_base_valid"] > 0)
        out["baseline_behavior_rate_all"] = out["n_base_match"] / out["n_items"]
    out["change_valid"] = out["behavior_rate_valid"] - out["baseline_behavior_rate_valid"]
    out["change_all"] = out["behavior_rate_all"] - out["baseline_behavior_rate_all"]
    return out


def slot_agreement(logit: pd.DataFrame, generation: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset × condition (baseline, or layer × strength): does the answer
    the logits prefer at the answer slot match the answer the model wrote?"""
    key = ["model", "dataset", "item_id", "layer", "strength"]
    joined = logit[key + ["logit_diff", "baseline_logit_diff"]].merge(
        generation[key + ["valid", "matches_behavior", "baseline_valid", "baseline_matches"]], on=key, how="inner"
    )
    if joined.empty:
        return pd.DataFrame()
    base = joined.drop_duplicates(["model", "dataset", "item_id"]).assign(
        condition="unsteered",
        slot=lambda f: f["baseline_logit_diff"] > 0,
        gen_valid=lambda f: _bool(f["baseline_valid"]),
        gen_match=lambda f: _bool(f["baseline_matches"]),
    )
    steered = joined.assign(
        condition=lambda f: "layer " + f["layer"].astype(str) + ", " + f["strength"].map(lambda s: f"{s:+g}"),
        slot=lambda f: f["logit_diff"] > 0,
        gen_valid=lambda f: _bool(f["valid"]),
        gen_match=lambda f: _bool(f["matches_behavior"]),
    )
    rows = []
    for frame in (base, steered):
        for (model, dataset, condition), cell in frame.groupby(["model", "dataset", "condition"], sort=False):
            valid = cell[cell["gen_valid"]]
            rows.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "condition": condition,
                    "n_items": len(cell),
                    "slot_prefers_behavior": float(cell["slot"].mean()),
                    "generation_valid": float(cell["gen_valid"].mean()),
                    "generation_behavior_valid": float(valid["gen_match"].mean()) if len(valid) else float("nan"),
                    "agreement": float((valid["slot"] == valid["gen_match"]).mean()) if len(valid) else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def generation_tables(generation: pd.DataFrame | None, logit: pd.DataFrame | None = None):
    """Report tables (``report.Table``) for the generation results; [] without any."""
    if generation is None or generation.empty:
        return []
    r = rates(generation)
    rows = [
        {
            "model": x.model,
            "dataset": x.dataset,
            "layer": int(x.layer),
            "strength": f"{x.strength:+g}",
            "items": int(x.n_items),
            "valid": pct(x.valid_rate),
            "behaviour (among valid)": pct(x.behavior_rate_valid),
            "behaviour (invalid = no)": pct(x.behavior_rate_all),
            "baseline (among valid)": pct(x.baseline_behavior_rate_valid),
            "baseline (invalid = no)": pct(x.baseline_behavior_rate_all),
            "change (among valid)": percentage_points(x.change_valid),
            "change (invalid = no)": percentage_points(x.change_all),
        }
        for x in r.itertuples()
    ]
    tables = [
        Table(
            "generation_rates",
            "Generation: validity and behaviour rate per configuration",
            pd.DataFrame(rows),
            "valid = share of answers that are a clean A or B (after </think> when thinking). Behaviour "
            "(among valid) = matching / valid answers; behaviour (invalid = no) = matching / all answers, an "
            "invalid answer counted as not showing the behaviour. Baseline = the same items unsteered.",
        )
    ]
    if logit is not None and not logit.empty:
        agree = slot_agreement(logit, generation)
        if not agree.empty:
            arows = [
                {
                    "model": x.model,
                    "dataset": x.dataset,
                    "condition": x.condition,
                    "items": int(x.n_items),
                    "answer slot prefers behaviour": pct(x.slot_prefers_behavior),
                    "generated: valid": pct(x.generation_valid),
                    "generated: behaviour (among valid)": pct(x.generation_behavior_valid),
                    "agreement (valid answers)": pct(x.agreement),
                }
                for x in agree.itertuples()
            ]
            tables.append(
                Table(
                    "answer_slot_vs_generation",
                    "Answer slot versus generated answer, per item",
                    pd.DataFrame(arows),
                    "Answer slot prefers behaviour = share of items whose logit diff at the answer slot is > 0 (the "
                    "logits right after the prompt favour the matching answer). Agreement = share of valid generated "
                    "answers whose letter is the one the answer slot prefers. Low agreement: what the model writes "
                    "(e.g. after thinking) is not what its answer-slot logits say, so the logit diff and generation "
                    "measure different things.",
                    main=True,
                )
            )
    return tables


def write_tables_csv(out_dir: Path, generation: pd.DataFrame | None, logit: pd.DataFrame | None) -> None:
    if generation is None or generation.empty:
        return
    frames = {"generation_rates_by_config": rates(generation)}
    if logit is not None and not logit.empty:
        frames["answer_slot_vs_generation"] = slot_agreement(logit, generation)
    for name, frame in frames.items():
        atomic_write(out_dir / "tables" / f"{name}.csv", partial(frame.to_csv, index=False))


def build_generation_only(run_dirs: list[Path], out_dir: Path):
    """The report of runs that have generation results and no logit diff."""
    frames, runs = [], []
    notes: list[str] = []
    for path in run_dirs:
        run = read_run(Path(path), notes)
        if run.generation is None:
            raise ResultsError(
                f"{path}: no results/logit_diff.parquet or results/generation.parquet; "
                "expected a run directory written by `remote-steer run`"
            )
        frames.append(_normalise(run.generation, run.training, run.info))
        runs.append(run.info)
    generation = pd.concat(frames, ignore_index=True)
    if generation.empty:
        raise ResultsError(
            f"{', '.join(str(p) for p in run_dirs)}: results/generation.parquet has no rows; "
            "expected the results of at least one finished chunk"
        )
    tables = generation_tables(generation)
    for number, table in enumerate(tables, start=1):
        table.title = f"Table {number}. {table.title}"
    notes.append("generation-only run(s): no logit diff saved, so logit-diff tables and figures are left out.")
    if (mixed := mixed_note(runs)) is not None:
        notes.append(mixed)
    report = Report(out_dir, out_dir / "report.md", tables, [], notes, runs, {})
    out = (
        [
            "# remote-steer report",
            "",
            f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} from saved results only (no model loaded).",
            "",
            "## Sources",
            "",
            markdown_table(
                pd.DataFrame(
                    [
                        {
                            "run": r.name,
                            "path": str(r.path),
                            "git commit": r.git_commit,
                            "status": r.status,
                            "models": ", ".join(r.models),
                            "computed on": r.where,
                            "datasets": ", ".join(r.datasets),
                            "generation rows": r.generation_rows,
                        }
                        for r in runs
                    ]
                )
            ),
            "## Notes",
            "",
        ]
        + [f"- {n}" for n in notes]
        + ["", "## Generation", ""]
    )
    for table in tables:
        out += [f"### {table.title}", "", markdown_table(table.frame), f"_{table.caption}_", ""]
    write_tables_csv(out_dir, generation, None)
    atomic_write(report.path, lambda tmp: tmp.write_text("\n".join(out)))
    return report
