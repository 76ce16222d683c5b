"""Free generation under steering: which configurations a model × concept generates
for, with which engine, and the stage that runs it (``generation_stage``).

``[generation]`` layers come as absolute indices, as depth fractions (one spec for
36- and 94-layer models), or as the ``best_layers`` best layers of the same model ×
concept's logit sweep (the layers with the largest Glass's delta at the strongest
positive strength, read from the run's saved logit parts).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from remote_steer.engines.extraction import SteeringVectors
from remote_steer.engines.generation_plain import generation_rows
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.errors import SpecError
from remote_steer.run.chunked import ChunkedStage, run_chunked
from remote_steer.run.context import RunContext
from remote_steer.run.sweep_stage import LOGIT_TABLE

GENERATION_TABLE = "generation"


def best_k_layers(logit: pd.DataFrame, k: int) -> list[int]:
    """The k layers where the strongest positive strength moves the logit diff most."""
    from remote_steer.analysis.statistics import glass_deltas

    deltas = glass_deltas(logit)
    positive = deltas[deltas["strength"] > 0]
    if positive.empty:
        positive = deltas.assign(glass_delta=deltas["glass_delta"].abs())
    strongest = positive[positive["strength"] == positive["strength"].max()]
    ranked = strongest.sort_values(["glass_delta", "layer"], ascending=[False, True], na_position="last")
    return sorted(int(layer) for layer in ranked["layer"].head(k))


def generation_configs(spec, prepared, concept: str, store, logit_table: str) -> list[SteerConfig]:
    gen = spec.generation
    strengths = gen.strengths or spec.strengths_for(prepared.spec)
    layers = list(prepared.generation_layers)
    if gen.best_layers is not None:
        parts = store.part_files(logit_table, prepared.spec.label, concept)
        if not parts:
            raise SpecError(
                f"{spec.path or 'spec'}: generation.best_layers: no logit sweep saved for "
                f'{prepared.spec.label} × {concept}; expected evaluation.modes to include "logit"'
            )
        logit = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        layers = best_k_layers(logit, gen.best_layers)
    return [SteerConfig(layer, s) for layer in layers for s in strengths]


def make_generation_engine(spec, prepared, model: Any, backend: Any):
    """The fast engine where the model's layout allows it and the spec asks for it
    (``engine = "fast"``, the default), else the plain one (``engines.choice``)."""
    from remote_steer.engines.choice import GenerationSettings, generation_engine

    gen = spec.generation
    settings = GenerationSettings(gen.batch_size, gen.max_new_tokens, prepared.thinking, gen.answer_tokens)
    return generation_engine(model, backend, spec.evaluation.positions, settings, prepared.spec.engine).engine


def generation_stage(ctx: RunContext, concept: str, vectors: SteeringVectors) -> None:
    """Free generation under steering on a subset of layers; answers parsed to A/B."""
    spec, prepared, name = ctx.spec, ctx.prepared, ctx.name
    configs = generation_configs(spec, prepared, concept, ctx.store, LOGIT_TABLE)
    encoded = prepared.generation_encoded[concept]
    by_id = {item.item_id: item for item in ctx.plan.splits[concept].test}

    def make_engine():
        return make_generation_engine(spec, prepared, ctx.model(), ctx.backend)

    def generation_chunk(first, chunk, engine, on_rows, key, todo_configs):
        result = engine.run(
            chunk, vectors.scaled(spec.evaluation.strength_unit), todo_configs, on_rows=on_rows, request_key=key
        )
        items = [by_id[it.item_id] for it in chunk]
        return generation_rows(
            name, concept, prepared.n_layers, prepared.training, items, todo_configs, result, thinking=prepared.thinking
        )

    run_chunked(
        ctx, ChunkedStage(GENERATION_TABLE, "generate", concept, encoded, configs, make_engine, generation_chunk)
    )
