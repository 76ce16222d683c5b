"""The logit sweep of one model × concept: the vector at every layer × strength on the
held-out items, one checkpointed part per chunk (``run/chunked.py``). With a joint pass
(``rigour.JointPass``) the same requests carry the controls and the letter control."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from remote_steer.engines.choice import sweep_engine
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, HeldPrompts
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.run import rigour
from remote_steer.run.chunked import ChunkedStage, cell_columns, run_chunked
from remote_steer.run.context import RunContext

LOGIT_TABLE = "logit_diff"


def sweep_stage(
    ctx: RunContext,
    concept: str,
    vectors: SteeringVectors,
    configs: list[SteerConfig],
    joint: rigour.JointPass | None,
    hold: Callable[[], HeldPrompts | None] | None = None,
) -> None:
    """Every configuration the saved parts lack, chunk by chunk. ``hold``: where the fast
    engine keeps its prompt passes (for the side-effects matrix, ``run/side_effects.py``)."""
    spec, prepared, store, name = ctx.spec, ctx.prepared, ctx.store, ctx.name
    _, test = prepared.encoded[concept]

    def engine():  # built only if a chunk is left
        rows = joint.batch_rows() if joint is not None else spec.evaluation.batch_size
        built = sweep_engine(ctx.model(), ctx.backend, rows, spec.evaluation.positions, prepared.spec.engine).engine
        if hold is not None and isinstance(built, FastLogitDiffEngine):
            built.hold = hold()
        return built

    def logit_chunk(first, chunk, engine, on_rows, key, todo_configs):
        control_parts = store.chunk_parts(rigour.CONTROL_TABLE, name, concept, first)
        fast = isinstance(engine, FastLogitDiffEngine)  # chosen by engines.choice
        if joint is not None and fast and len(todo_configs) == len(configs) and not control_parts:
            sweep = joint.run(engine, first, chunk, on_rows, key, store)  # controls part written too
        else:
            sweep = engine.run(
                chunk, vectors.scaled(spec.evaluation.strength_unit), todo_configs, on_rows=on_rows, request_key=key
            )
        frame = tidy(name, concept, prepared, chunk, todo_configs, sweep, spec.evaluation.positions)
        return frame.assign(strength_unit=spec.evaluation.strength_unit)

    n_vectors = 1 + len(joint.kinds) if joint is not None else 1
    run_chunked(ctx, ChunkedStage(LOGIT_TABLE, "sweep", concept, test, configs, engine, logit_chunk, n_vectors))


def tidy(model, concept, prepared, items, configs, sweep, positions) -> pd.DataFrame:
    """One row per item × layer × strength."""
    rows = []
    for i, item in enumerate(items):
        for c, config in enumerate(configs):
            rows.append(
                {
                    **cell_columns(model, concept, prepared, item, config),
                    "logit_diff": float(sweep.steered[i, c]),
                    "baseline_logit_diff": float(sweep.baseline[i]),
                    "matching_letter": item.matching_letter,
                    "positions": positions,
                    "training": prepared.training,
                }
            )
    return pd.DataFrame(rows)
