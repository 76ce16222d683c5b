"""The letter control: an A-minus-B direction of the vector's size, swept like the vector.

For real (non-toy) models the runner adds, per model × concept, one control to the
logit sweep: the CAA recipe applied to *letters* instead of behaviour (positive =
prompt + "A", negative = prompt + "B", on the same training items, so it is the
mean activation difference between answering A and answering B), rescaled at
every layer to the norm of that layer's CAA vector, then added at the sweep's
layers and strongest ± strength exactly as the vector is. What is kept is the mean
change of the letter gap logit(A) − logit(B) on the held-out items, per layer and
strength: ``results/letter_control.parquet``. ``analysis/letters.py`` compares it
with the letter-gap change the CAA vector itself causes (letter collapse, rule 2).

Toys are skipped: random weights have no letter preference worth controlling, and
the quickstart stays as fast as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from remote_steer.data.prompts import EncodedItem
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.run.context import RunContext
from remote_steer.rundir import RunDir, write_csv

TABLE = "letter_control"
COLUMNS = ["model", "dataset", "layer", "strength", "letter_control_shift", "control_norm"]


def as_letters(item: EncodedItem) -> EncodedItem:
    """The same prompt scored as "A" versus "B": the logit diff becomes the letter gap."""
    if item.matching_letter == "A":
        return item
    return dataclasses.replace(
        item, matching_letter="A", matching_token=item.other_token, other_token=item.matching_token
    )


def control_strengths(strengths: Sequence[float]) -> list[float]:
    """The strongest ± pair of the sweep (the control is a check, not a second sweep)."""
    nonzero = [float(s) for s in strengths if s != 0]
    if not nonzero:
        return []
    top = max(abs(s) for s in nonzero)
    return sorted({s for s in nonzero if abs(s) == top})


def part_path(store: RunDir, model: str, concept: str):
    return store.cell_part_path(TABLE, model, concept)


def run_letter_control(ctx: RunContext, concept: str, vectors: SteeringVectors) -> bool:
    """Compute and checkpoint one model × concept's control; False if already there."""
    spec, prepared, store, backend, name = ctx.spec, ctx.prepared, ctx.store, ctx.backend, ctx.name
    train, test = prepared.encoded[concept]
    layers = prepared.sweep_layers
    path = part_path(store, name, concept)
    pair = control_strengths(spec.strengths_for(prepared.spec))
    if path.exists() or not pair or not layers or not test:
        return False
    loaded = ctx.model()
    letters = extract_caa_fast(
        loaded,
        [as_letters(it) for it in train],
        concept=f"{concept}:letters",
        batch_size=spec.extraction.batch_size,
        backend=backend,
        request_key=f"letter-extract/{name}/{concept}",
    ).vectors
    configs = [SteerConfig(layer, s) for layer in layers for s in pair]
    rows, positions = spec.evaluation.batch_size, spec.evaluation.positions
    sweep = FastLogitDiffEngine(loaded, backend, rows, positions).run(
        [as_letters(it) for it in test],
        scaled_letters(letters, vectors),
        configs,
        request_key=f"letter-sweep/{name}/{concept}",
    )
    shift = (torch.as_tensor(sweep.steered) - torch.as_tensor(sweep.baseline)[:, None]).mean(0)
    write_shift(store, name, concept, configs, shift, vectors)
    return True


def scaled_letters(letters: torch.Tensor, vectors: SteeringVectors) -> torch.Tensor:
    """The A-minus-B direction [layers, hidden] rescaled, layer by layer, to the norm of
    that layer's CAA vector (raw units, whatever the sweep's strength unit)."""
    target = vectors.vectors.norm(dim=1)
    return letters * (target / letters.norm(dim=1).clamp_min(1e-12))[:, None]


def letter_gap_shift(items: Sequence[EncodedItem], baseline, steered) -> torch.Tensor:
    """Mean change of the letter gap logit(A) − logit(B) per configuration, from the
    *behaviour* logit diffs (logit(matching) − logit(other)) of ``items`` [items] and
    [items, configurations]: the gap is the diff where A matches and minus it where B does
    (what ``as_letters`` items would have read directly)."""
    signs = torch.tensor([1.0 if it.matching_letter == "A" else -1.0 for it in items], dtype=torch.float64)
    change = torch.as_tensor(steered, dtype=torch.float64) - torch.as_tensor(baseline, dtype=torch.float64)[:, None]
    return (signs[:, None] * change).mean(0)


def write_shift(store: RunDir, name: str, concept: str, configs, shift, vectors: SteeringVectors) -> None:
    """Checkpoint one model × concept's letter control: its shift per configuration."""
    target = vectors.vectors.norm(dim=1)
    frame = pd.DataFrame(
        {
            "model": name,
            "dataset": concept,
            "layer": [c.layer for c in configs],
            "strength": [c.strength for c in configs],
            "letter_control_shift": [float(v) for v in shift],
            "control_norm": [float(target[c.layer]) for c in configs],
        }
    )
    store.write_cell_part(TABLE, name, concept, frame[COLUMNS])


def consolidate(store: RunDir) -> pd.DataFrame:
    """All control parts → ``results/letter_control.parquet`` (absent when there are none)."""
    frame = store.consolidate(TABLE)
    return frame if not frame.empty else pd.DataFrame(columns=COLUMNS)


def show_letters(display: Any, store: RunDir, results: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Closing table: the best layers read per letter, and the flagged cells.

    Writes ``results/letter_effects.csv`` (every cell) and returns that table.
    """
    from remote_steer.analysis.controls import floor_sentence
    from remote_steer.analysis.letters import (
        best_layer_letters,
        collapse_verdict,
        found_sentence,
        letter_effects,
        with_controls,
    )

    if results.empty:
        return pd.DataFrame()
    control = consolidate(store)
    letters = letter_effects(results, control)
    write_csv(store.letter_effects_path, letters)
    comparison = _control_comparison(store, results)
    best = with_controls(best_layer_letters(letters, summary), comparison)
    verdict = collapse_verdict(letters, summary)
    several = letters["model"].nunique() > 1  # the model column only when it tells rows apart

    def lead(r) -> tuple:
        return (r.model, r.dataset) if several else (r.dataset,)

    lead_cols = ["model", "dataset"] if several else ["dataset"]
    if not best.empty:
        rows = [
            (
                *lead(r),
                r.layer,
                f"{r.pos_effect_A:+.2f}/{r.pos_effect_B:+.2f}",
                f"{r.neg_effect_A:+.2f}/{r.neg_effect_B:+.2f}",
                f"{r.pos_letter_shift:+.2f}/{r.neg_letter_shift:+.2f}",
                f"{r.pos_controls} / {r.neg_controls}",
                r.verdict,
            )
            for r in best.itertuples()
        ]
        s_pos, s_neg = best["pos_strength"].iloc[0], best["neg_strength"].iloc[0]
        display.table(
            "Answer letters at the best layer: does behaviour move, or only the letter?"
            + ("" if several else f" ({letters['model'].iloc[0]})"),
            [
                *lead_cols,
                "layer",
                f"A/B items {s_pos:+g}",
                f"A/B items {s_neg:+g}",
                "A−B gap ±",
                "controls ±",
                "verdict",
            ],
            rows,
            "A/B items: mean logit-diff change on items whose matching answer is A / B (behaviour moves both with "
            "the sign of the strength; a letter preference moves them apart). A−B gap: mean change of "
            f"logit(A) − logit(B) at {s_pos:+g} / {s_neg:+g}. Controls: Glass's delta against random and "
            "shuffled-label vectors at the same configuration (beyond = further than every control, one-sided p; "
            "min = the smallest p its controls allow; — = no [controls] in the spec). "
            + (f"{floor_sentence(int(comparison['n_controls'].max()))} " if comparison is not None else "")
            + "Verdict: behaviour only when beyond the controls, not letter "
            f"collapse, and both letters follow the vector. {verdict}.",
        )
        display.note(found_sentence(best, several))
    flagged = letters[letters["collapse"]]
    if not flagged.empty:
        shown = flagged.reindex(flagged["letter_shift"].abs().sort_values(ascending=False).index).head(12)
        rows = [
            (
                *lead(r),
                r.layer,
                f"{r.strength:+g}",
                f"{r.effect_A:+.2f}",
                f"{r.effect_B:+.2f}",
                f"{r.letter_shift:+.2f}",
                "—" if not np.isfinite(r.letter_control_shift) else f"{r.letter_control_shift:+.2f}",
                r.collapse_rule,
            )
            for r in shown.itertuples()
        ]
        more = (
            f" Showing the {len(shown)} largest of {len(flagged)}; all in results/letter_effects.csv."
            if len(flagged) > len(shown)
            else ""
        )
        display.table(
            "Letter collapse: cells where steering shifts the answer letter, not the behaviour",
            [*lead_cols, "layer", "strength", "A items", "B items", "A−B gap", "A−B dir.", "rule"],
            rows,
            "A−B dir.: letter-gap change from an A-minus-B direction of the vector's norm (the letter control)." + more,
        )
    else:
        display.note(verdict)
    return letters


def _control_comparison(store: RunDir, results: pd.DataFrame) -> pd.DataFrame | None:
    """The real vector against the run's control vectors per configuration (None without controls)."""
    from remote_steer.analysis import controls as C
    from remote_steer.analysis.statistics import glass_deltas

    controls = store.table("controls")
    if controls is None:
        return None
    pool = C.vector_deltas(controls)
    pool = pool[pool["kind"].isin(C.CONTROL_KINDS)]
    if pool.empty:
        return None
    return C.compare(glass_deltas(results), pool)
