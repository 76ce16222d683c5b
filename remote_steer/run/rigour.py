"""The runner's rigour stages (docs/rigour.md): vectors with residual norms and
control/bootstrap vectors from one extraction pass, the controls sweep, the norms table.

Kept out of ``runner.py`` so the pipeline there stays readable; the runner calls
``vectors_for``, ``controls_stage`` and ``write_norms``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from remote_steer.analysis.decodability import DECODABILITY_TABLE, decodability_frame, readout_basis
from remote_steer.engines.controls import BOOTSTRAP, RANDOM, SHUFFLED, extraction_weights, random_directions, rng_for
from remote_steer.engines.extraction import SteeringVectors, residual_scale
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast_readout
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.models.registry import layer_depth
from remote_steer.run.chunked import ChunkedStage, cell_columns, run_chunked
from remote_steer.run.context import RunContext
from remote_steer.rundir import RunDir, write_parquet
from remote_steer.rundir.vectorfile import read_controls, write_controls

CONTROL_TABLE = "controls"
NORMS_TABLE = "norms"


def controls_path(store: RunDir, model: str, concept: str) -> Path:
    return store.controls_path(model, concept)


def _save_controls(path: Path, extra: torch.Tensor, kinds: list[tuple[str, int]]) -> None:
    tensors = {}
    for kind in (SHUFFLED, BOOTSTRAP):
        rows = [i for i, (k, _) in enumerate(kinds) if k == kind]
        if rows:
            tensors[kind] = extra[rows].contiguous()
    write_controls(path, tensors)


LETTERS = "letters"  # the letter control's A-minus-B direction (run/letter_control.py), kept in memory only


def vectors_for(
    ctx: RunContext, concept: str, letters: bool = False
) -> tuple[SteeringVectors, dict[str, torch.Tensor]]:
    """Load or extract the concept's vectors (and, when the spec asks, its shuffled-label
    and bootstrap vectors, from the same pass). Returns (vectors, {kind: [n, layers, hidden]}).

    ``letters``: when the vectors are extracted now, the same pass also gives the letter
    control's A-minus-B direction (``extra["letters"]``, [1, layers, hidden]): answering A
    minus answering B is, item by item, ± the CAA difference (+ where A is the matching
    answer), so it is one more weight row, not a second extraction."""
    spec, prepared, store, backend, name = ctx.spec, ctx.prepared, ctx.store, ctx.backend, ctx.name
    train, _ = prepared.encoded[concept]
    controls = spec.controls
    vector_path, extra_path = store.vector_path(name, concept), controls_path(store, name, concept)
    need_extra = bool(controls.shuffled or controls.bootstrap)
    repair = prepared.spec.engine == "fast" and _decodability_set_aside(store, name, concept)
    if not repair and vector_path.exists() and (not need_extra or extra_path.exists()):
        vectors = SteeringVectors.load(vector_path)
        if spec.evaluation.strength_unit == "raw" or vectors.residual_norms is not None:
            return vectors, (_load_extra(extra_path) if need_extra else {})
    weights, kinds = extraction_weights(
        [it.matching_letter for it in train], controls.shuffled, controls.bootstrap, spec.seed, name, concept
    )
    if letters and prepared.spec.engine == "fast":
        signs = torch.tensor([[1.0 if it.matching_letter == "A" else -1.0 for it in train]])
        weights = signs if weights is None else torch.cat([weights.to(signs.dtype), signs])
        kinds = [*kinds, (LETTERS, 0)]
    with ctx.display.progress(f"{name} · {concept} · extract", len(train), "pairs", pace=f"{name} · pairs") as task:
        backend.on_status = lambda _stage, state: task.state(state)
        if prepared.spec.engine == "plain" and not need_extra and spec.evaluation.strength_unit == "raw":
            from remote_steer.engines.extraction import extract_caa  # nnsight operations only, no shipped kernel

            vectors = extract_caa(
                ctx.model(),
                train,
                concept=concept,
                batch_size=spec.extraction.batch_size,
                backend=backend,
                on_batch=task.advance,
                request_key=f"extract/{name}/{concept}",
            )
            vectors.save(vector_path)
            return vectors, {}
        loaded = ctx.model()
        vectors, extra, readout = extract_caa_fast_readout(
            loaded,
            train,
            concept=concept,
            batch_size=spec.extraction.batch_size,
            backend=backend,
            on_batch=task.advance,
            request_key=f"extract/{name}/{concept}",
            positions=spec.evaluation.positions,
            weights=weights,
            basis=readout_basis(loaded.hidden_size, backend.is_remote, spec.seed),
        )
    if readout is not None and spec.evaluation.methods and backend.kind == "local":
        ctx.readouts[concept] = (vectors, readout)  # the whole residual: run/methods_stage.py, after the sweep
    if readout is not None:  # decodability by depth (analysis/decodability.py), before the vector file
        strata = [it.matching_letter for it in train]
        frame = decodability_frame(
            readout, strata, model=name, concept=concept, training=prepared.training, seed=spec.seed
        )
        store.write_part(DECODABILITY_TABLE, name, concept, 0, frame)
    letter_rows = [i for i, (k, _) in enumerate(kinds) if k == LETTERS]
    if repair and vector_path.exists() and (not need_extra or extra_path.exists()):
        vectors = SteeringVectors.load(vector_path)  # the saved record stays; only the part was lost
    else:
        if need_extra:
            _save_controls(extra_path, extra, kinds)  # before the vector file: its presence means both exist
        vectors.save(vector_path)
    out = _load_extra(extra_path) if need_extra else {}
    if letter_rows:
        out[LETTERS] = extra[letter_rows]
    return vectors, out


def _decodability_set_aside(store: RunDir, name: str, concept: str) -> bool:
    """The concept's decodability part was damaged and set aside (``RunDir.set_aside_damaged``)
    and not yet computed again: its extraction pass runs again to repair it."""
    part = store.part_path(DECODABILITY_TABLE, name, concept, 0)
    return not part.exists() and part.with_name(part.name + ".damaged").exists()


def _load_extra(path: Path) -> dict[str, torch.Tensor]:
    return read_controls(path)


def control_sets(
    spec, vectors: SteeringVectors, extra: dict[str, torch.Tensor], name: str, concept: str
) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """[V, layers, hidden] control and bootstrap vectors in the spec's strength unit, and
    (kind, index) per row. In residual units every vector is rescaled, layer by layer, to
    the layer's mean residual norm, as the real one is; random directions always carry the
    real (scaled) vector's norm."""
    unit = spec.evaluation.strength_unit
    real = vectors.scaled(unit)
    sets, kinds = [], []
    if spec.controls.random:
        sets.append(random_directions(real, spec.controls.random, rng_for(spec.seed, name, concept, RANDOM)))
        kinds += [(RANDOM, i) for i in range(spec.controls.random)]
    for kind in (SHUFFLED, BOOTSTRAP):
        count = spec.controls.shuffled if kind == SHUFFLED else spec.controls.bootstrap
        if count and kind in extra:
            block = extra[kind][:count]
            if unit == "residual":
                assert vectors.residual_norms is not None  # vectors.scaled(unit) above raised otherwise
                block = torch.stack([v * residual_scale(v, vectors.residual_norms)[:, None] for v in block])
            sets.append(block)
            kinds += [(kind, i) for i in range(len(block))]
    return torch.cat(sets), kinds


def controls_stage(
    ctx: RunContext, concept: str, vectors: SteeringVectors, extra: dict[str, torch.Tensor], configs: list[SteerConfig]
) -> None:
    """Every control and bootstrap vector on the same held-out items and configurations as
    the real one, one request per chunk (the prompt pass shared by all of them)."""
    spec, prepared, name = ctx.spec, ctx.prepared, ctx.name
    if not spec.controls.any:
        return
    sets, kinds = control_sets(spec, vectors, extra, name, concept)
    _, test = prepared.encoded[concept]

    def make_engine():  # rows in flight: up to 4 × batch_size, so a group still holds several items
        rows = spec.evaluation.batch_size * max(1, min(4, len(kinds)))
        return FastLogitDiffEngine(ctx.model(), ctx.backend, rows, spec.evaluation.positions)

    def run_chunk(first, chunk, engine, on_rows, key, todo_configs):
        baseline, steered = engine.run_vectors(chunk, sets, todo_configs, on_rows=on_rows, request_key=key)
        return control_rows(ctx, concept, chunk, todo_configs, kinds, baseline, steered)

    run_chunked(
        ctx, ChunkedStage(CONTROL_TABLE, "controls", concept, test, configs, make_engine, run_chunk, len(kinds))
    )


def control_rows(ctx: RunContext, concept, items, configs, kinds, baseline, steered) -> pd.DataFrame:
    """One row per item × control vector × layer × strength."""
    rows = []
    for i, item in enumerate(items):
        for v, (kind, index) in enumerate(kinds):
            for c, config in enumerate(configs):
                rows.append(
                    {
                        **cell_columns(ctx.name, concept, ctx.prepared, item, config),
                        "kind": kind,
                        "vector": index,
                        "logit_diff": float(steered[i, v, c]),
                        "baseline_logit_diff": float(baseline[i]),
                        "training": ctx.prepared.training,
                        "strength_unit": ctx.spec.evaluation.strength_unit,
                    }
                )
    return pd.DataFrame(rows)


def write_norms(store: RunDir, plan) -> pd.DataFrame:
    """``results/norms.parquet``: per model × concept × layer, the vector norm, the mean
    residual norm at the steered positions and their ratio, from the saved vectors."""
    rows = []
    for prepared in plan.models:
        name = prepared.spec.label
        for concept in plan.splits:
            path = store.vector_path(name, concept)
            if not path.exists():
                continue
            vectors = SteeringVectors.load(path)
            residual = vectors.residual_norms
            for layer, norm in enumerate(vectors.norms):
                res = float(residual[layer]) if residual is not None else float("nan")
                rows.append(
                    {
                        "model": name,
                        "dataset": concept,
                        "layer": layer,
                        "n_layers": prepared.n_layers,
                        "layer_fraction": layer_depth(layer, prepared.n_layers),
                        "vector_norm": norm,
                        "residual_norm": res,
                        "ratio": norm / res if res > 0 else float("nan"),
                        "training": prepared.training,
                        "positions": vectors.positions,
                    }
                )
    frame = pd.DataFrame(rows)
    write_parquet(store.results_path(NORMS_TABLE), frame)
    return frame


def configs_for(spec, prepared) -> list[SteerConfig]:
    return [SteerConfig(layer, s) for layer in prepared.sweep_layers for s in spec.strengths_for(prepared.spec)]


class JointPass:
    """One request per chunk for the sweep, its control vectors and the letter control's
    direction (issue 18): the vector sets [real, controls…, letters] share the chunk's
    prompt pass, each (set, configuration) pair one more row of the staircase. The
    letter direction is computed only at the strongest ± strengths (``only``). Writes the
    controls part beside the sweep's; keeps the letter rows until every chunk has them.
    """

    def __init__(self, ctx: RunContext, concept, vectors, extra, letters, configs) -> None:
        from remote_steer.run.letter_control import control_strengths, scaled_letters

        spec, prepared, name = ctx.spec, ctx.prepared, ctx.name
        self.ctx = ctx
        self.spec, self.prepared, self.name, self.concept, self.configs = spec, prepared, name, concept, configs
        sets = [vectors.scaled(spec.evaluation.strength_unit)[None]]
        self.kinds: list[tuple[str, int]] = []
        if spec.controls.any:
            controls, self.kinds = control_sets(spec, vectors, extra, name, concept)
            sets.append(controls)
        pair = control_strengths(spec.strengths_for(prepared.spec)) if letters is not None else []
        self.letter_configs = [c for c, config in enumerate(configs) if config.strength in pair]
        self.only = None
        if self.letter_configs:
            every = sum(int(s.shape[0]) for s in sets)  # real and control vectors: every configuration
            sets.append(scaled_letters(letters[0], vectors)[None])
            chosen = set(self.letter_configs)
            self.only = [[True] * len(configs) for _ in range(every)]
            self.only.append([c in chosen for c in range(len(configs))])
        self.sets = torch.cat([s.to(sets[0].dtype) for s in sets])
        self.collected: dict[int, tuple[list, Any, Any]] = {}
        self.control_parts = 0  # controls parts written here (the controls stage then finds them done)

    @property
    def useful(self) -> bool:
        return bool(self.kinds or self.letter_configs)

    def batch_rows(self) -> int:
        """Rows in flight: as the controls stage, up to 4 × batch_size."""
        return self.spec.evaluation.batch_size * max(1, min(4, self.sets.shape[0]))

    def run(self, engine, first, chunk, on_rows, key, store):
        from remote_steer.engines.sweep_plain import SweepResult

        baseline, steered = engine.run_vectors(chunk, self.sets, self.configs, request_key=key, only=self.only)
        n_controls = len(self.kinds)
        if n_controls:
            frame = control_rows(
                self.ctx, self.concept, chunk, self.configs, self.kinds, baseline, steered[:, 1 : 1 + n_controls]
            )
            store.write_part(CONTROL_TABLE, self.name, self.concept, first, frame, job_key=key)
            self.control_parts += 1
        if self.letter_configs:
            self.collected[first] = (list(chunk), baseline, steered[:, -1][:, self.letter_configs])
        on_rows(len(chunk) * ((1 + n_controls) * len(self.configs) + 1))
        return SweepResult(baseline=baseline, steered=steered[:, 0])

    def write_letters(self, store, test, vectors) -> bool:
        """The letter control's part, if every held-out item went through this pass."""
        from remote_steer.run.letter_control import letter_gap_shift, write_shift

        if not self.letter_configs or sum(len(c) for c, _, _ in self.collected.values()) != len(test):
            return False
        firsts = sorted(self.collected)
        items = [it for f in firsts for it in self.collected[f][0]]
        baseline = np.concatenate([self.collected[f][1] for f in firsts])
        steered = np.concatenate([self.collected[f][2] for f in firsts])
        shift = letter_gap_shift(items, baseline, steered)
        write_shift(store, self.name, self.concept, [self.configs[c] for c in self.letter_configs], shift, vectors)
        return True
