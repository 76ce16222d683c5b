"""A stage run chunk by chunk: one request and one checkpointed part per chunk.

The sweep, the controls and generation are each a ``ChunkedStage`` (what to compute)
run by ``run_chunked`` with the model's ``RunContext`` (where, and what to count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from remote_steer.data.prompts import EncodedItem
from remote_steer.engines.batching import chunks
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.models.registry import layer_depth
from remote_steer.remote.request import ResultDeferred
from remote_steer.run import extend
from remote_steer.run.context import RunContext
from remote_steer.run.spec import ExperimentSpec
from remote_steer.rundir import RunDir

# (first item's index, the chunk's items, the engine, on_rows, request key, configurations) -> its part
RunChunk = Callable[[int, Sequence[EncodedItem], Any, Callable[[int], None], str, list[SteerConfig]], Any]


@dataclass
class ChunkedStage:
    """What one stage computes for one model × concept: ``run_chunk`` turns a chunk's
    items and the configurations its saved parts lack into a part of ``table``."""

    table: str
    label: str  # the bar's and the request key's stage name: sweep, controls, generate
    concept: str
    items: list[EncodedItem]
    configs: list[SteerConfig]
    make_engine: Callable[[], Any]  # built only if a chunk is left
    run_chunk: RunChunk
    vectors: int = 1  # vectors each configuration is steered with (the bar's rows per item)


def cell_columns(model: str, concept: str, prepared: Any, item: EncodedItem, config: SteerConfig) -> dict[str, Any]:
    """The columns a steered row of the sweep and of the controls starts with: which item,
    model, layer (and its depth) and strength."""
    return {
        "model": model,
        "dataset": concept,
        "item_id": item.item_id,
        "layer": config.layer,
        "layer_fraction": layer_depth(config.layer, prepared.n_layers),
        "n_layers": prepared.n_layers,
        "strength": config.strength,
    }


def run_chunked(ctx: RunContext, stage: ChunkedStage) -> None:
    """Run a stage chunk by chunk, one request and one checkpointed part per chunk,
    computing only the configurations a chunk's saved parts lack (``run.extend``).

    The bar counts rows: one held-out item under one of ``vectors`` vectors at one
    configuration, plus one unsteered row per item; rows of the sweep and the controls
    cost alike, so they share a pace (the controls' first ETA comes from the sweep's)."""
    store, name, concept, items, configs = ctx.store, ctx.name, stage.concept, stage.items, stage.configs
    size = recorded_chunk_size(store, stage.table, name, concept, lambda: chunk_size(ctx.spec, items, len(configs)))
    todo = []
    for first, chunk in zip(range(0, len(items), size), chunks(items, size), strict=True):
        missing, n_parts = extend.missing_configs(store.chunk_parts(stage.table, name, concept, first), configs)
        if missing:
            todo.append((first, chunk, [configs[c] for c in missing], n_parts))
    ctx.counts.skipped += -(-len(items) // size) - len(todo)
    if not todo:
        return
    engine = stage.make_engine()
    total_rows = sum(len(chunk) * (stage.vectors * len(todo_configs) + 1) for _, chunk, todo_configs, _ in todo)
    pace = f"{name} · {'generated' if stage.label == 'generate' else 'steered'} rows"
    backend = ctx.backend
    with ctx.display.progress(f"{name} · {concept} · {stage.label}", total_rows, "rows", pace=pace) as task:
        backend.on_status = lambda _stage, state: task.state(state)
        keys = [
            f"{stage.label}/{name}/{concept}/items-{first:05d}" + (f".x{n}" if n else "") for first, _, _, n in todo
        ]
        if backend.is_remote and backend.journal_dir is not None and len(todo) > 1:
            _submit_ahead(backend, todo, keys, engine, stage.run_chunk)
        for (first, chunk, todo_configs, n_parts), key in zip(todo, keys, strict=True):
            frame = stage.run_chunk(first, chunk, engine, task.advance, key, todo_configs)
            store.write_part(stage.table, name, concept, first, frame, extension=n_parts, job_key=key)
            ctx.counts.computed += 1
            if ctx.after_part is not None:
                ctx.after_part()


def _submit_ahead(backend, todo, keys, engine, run_chunk) -> None:
    """Remote: submit (and journal) every chunk's job before waiting on the first, so the
    server runs them back to back; the caller's pass then polls each by id, in order, as
    a rerun would. A chunk whose job was journaled by an earlier run is not sent again."""
    backend.defer_results = True
    try:
        for (first, chunk, todo_configs, _), key in zip(todo, keys, strict=True):
            try:
                run_chunk(first, chunk, engine, lambda _rows: None, key, todo_configs)
            except ResultDeferred:
                continue
            break  # not deferred (no job to journal): the caller's pass computes the rest as usual
    finally:
        backend.defer_results = False


def recorded_chunk_size(store: RunDir, table: str, model: str, concept: str, compute) -> int:
    """The chunk size this model × concept's parts were cut with (kept in the manifest, so
    that an extension with more configurations keeps the same part boundaries)."""
    key = f"{table}/{model}/{concept}"
    manifest = store.read_manifest()
    sizes = dict(manifest.chunk_sizes if manifest is not None else {})
    if key not in sizes:
        sizes[key] = int(compute())
        store.update_manifest(chunk_sizes=sizes)
    return int(sizes[key])


def chunk_size(spec: ExperimentSpec, items: list[EncodedItem], n_configs: int) -> int:
    """Items per checkpointed part and per request: ``chunk_items``, reduced so that one
    request stays within ``request_token_budget`` padded tokens. A sweep therefore makes
    at most ceil(items / chunk_size) requests per model × concept."""
    widest = max((len(it.prompt_ids) for it in items), default=1)
    fits = spec.evaluation.request_token_budget // (widest * (n_configs + 1))
    return max(1, min(spec.evaluation.chunk_items, fits))
