"""Strengths against the residual stream (docs/rigour.md "Strength sanity").

A strength *s* adds *s* × the CAA vector (raw units) or a vector of *s* × the layer's
mean residual norm (residual units). Either way the added vector's size against the
residual stream it is added to is a number the extraction has measured: raw, |s| ×
vector norm / residual norm; residual, |s|. Above ``LIMIT`` the added vector swamps
the residual stream and a Glass's delta measures the damage, not the behaviour: the
runner refuses such a strength after extraction, before the sweep computes anything,
unless ``--allow-large-strengths`` (or ``evaluation.allow_large_strengths``) says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from remote_steer.errors import SpecError
from remote_steer.run.spec import ExperimentSpec, spec_location

LIMIT = 10.0  # × the residual norm; docs/rigour.md says why


class StrengthRefused(SpecError):
    """A strength too large for the residual stream (the spec, not the data, is wrong)."""


def first_missing(run_dir: Path) -> Path | None:
    """The outermost of ``run_dir`` and its parents that does not exist yet (None: it exists)."""
    missing = None
    for path in (run_dir, *run_dir.absolute().parents):
        if path.exists():
            return missing
        missing = path
    return missing


def undo_open(made: Path | None, manifest: Path, before: bytes | None) -> None:
    """After a refusal: the directories this run made (``made``, from ``first_missing``) go;
    an existing run gets its manifest back, so the refused spec is not recorded as the
    run's (and a corrected spec is not refused for dropping its strengths). Vectors
    extracted meanwhile stay: they are whole, and the next run uses them."""
    import shutil

    from remote_steer.rundir import atomic_write

    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
    elif before is not None:
        atomic_write(manifest, lambda tmp: tmp.write_bytes(before))


def multiple(strength: float, vector_norm: float, residual_norm: float, unit: str) -> float:
    """The added vector's norm over the layer's mean residual norm."""
    if unit == "residual":
        return abs(strength)
    return abs(strength) * vector_norm / residual_norm if residual_norm > 0 else float("nan")


def _checked(spec: ExperimentSpec, prepared: Any) -> Iterable[tuple[str, tuple[float, ...], list[int]]]:
    """(field, strengths, layers) the run will add a vector with."""
    index = next(i for i, m in enumerate(spec.models) if m.label == prepared.spec.label)
    if "logit" in spec.evaluation.modes:
        own = prepared.spec.strengths is not None
        dotted = "models.strengths" if own else "evaluation.strengths"
        shown = f"models[{index}].strengths" if own else "evaluation.strengths"
        yield f"{spec_location(spec.path, dotted)}: {shown}", spec.strengths_for(prepared.spec), prepared.sweep_layers
    if "generation" in spec.evaluation.modes:
        strengths = spec.generation.strengths or spec.strengths_for(prepared.spec)
        dotted = "generation.strengths" if spec.generation.strengths else "evaluation.strengths"
        yield f"{spec_location(spec.path, dotted)}: {dotted}", strengths, prepared.generation_layers


def check(spec: ExperimentSpec, prepared: Any, concept: str, vectors: Any) -> None:
    """Refuse (SpecError, one line) the largest strength × layer whose added vector exceeds
    ``LIMIT`` × the residual norm, unless the spec allows large strengths. Vectors saved
    before residual norms were measured are not checked."""
    if spec.evaluation.allow_large_strengths or vectors.residual_norms is None:
        return
    unit = spec.evaluation.strength_unit
    norms, residual = vectors.norms, [float(r) for r in vectors.residual_norms]
    worst: tuple[float, str, float, int] | None = None
    for where, strengths, layers in _checked(spec, prepared):
        for layer in layers:
            for strength in strengths:
                m = multiple(strength, norms[layer], residual[layer], unit)
                if m > LIMIT and (worst is None or m > worst[0]):
                    worst = (m, where, strength, layer)
    if worst is None:
        return
    m, where, strength, layer = worst
    added = f"{strength:g} × the residual norm" if unit == "residual" else f"{strength:g} × vector"
    raise StrengthRefused(
        f"{where}: {added} at layer {layer} of {prepared.spec.label} ({concept}) is {m:.3g} × the residual norm "
        f"there (limit {LIMIT:g}×); pass --allow-large-strengths to run it anyway"
    )


def equivalents(norms: pd.DataFrame, sweep_layers: dict[str, list[int]], strength: float) -> str | None:
    """One caption line: what raw ``strength`` amounts to in residual units per model, the
    range over its sweep layers and concepts (``norms``: the norms table)."""
    if norms.empty or "ratio" not in norms:
        return None
    parts = []
    for model, layers in sweep_layers.items():
        ratios = norms[(norms["model"] == model) & norms["layer"].isin(layers)]["ratio"].dropna()
        if len(ratios):
            lo, hi = abs(strength) * ratios.min(), abs(strength) * ratios.max()
            parts.append(f"{model} {_g(lo)}–{_g(hi)}×")
    if not parts:
        return None
    return (
        f"In residual units, raw strength ±{abs(strength):g} is {', '.join(parts)} the residual norm "
        "(range over sweep layers and concepts)."
    )


def _g(value: float) -> str:
    return f"{value:.2g}" if value < 10 else f"{value:.0f}"


def saved_norms(run_dir: Path, spec: ExperimentSpec) -> pd.DataFrame:
    """The norms table of the vectors a run directory already holds (for ``plan``)."""
    from remote_steer.engines.extraction import SteeringVectors
    from remote_steer.rundir import RunDir

    store, rows = RunDir(run_dir), []
    for model in spec.models:
        for concept in spec.data.concepts:
            path = store.vector_path(model.label, concept)
            if not path.exists():
                continue
            try:
                vectors = SteeringVectors.load(path)
            except Exception:  # a damaged file: plan says nothing about it
                continue
            if vectors.residual_norms is None:
                continue
            for layer, (norm, res) in enumerate(zip(vectors.norms, vectors.residual_norms, strict=True)):
                rows.append({"model": model.label, "dataset": concept, "layer": layer, "ratio": norm / float(res)})
    return pd.DataFrame(rows)


def plan_note(spec: ExperimentSpec) -> str:
    """``plan``'s line on strengths: their residual-unit equivalent from the vectors the run
    directory already holds, else when it will be known; and the limit."""
    from remote_steer.models.registry import lookup

    strongest = max(abs(s) for m in spec.models for s in spec.strengths_for(m))
    limit = f"`run` refuses strengths above {LIMIT:g}× the residual norm (docs/rigour.md)."
    if spec.evaluation.strength_unit == "residual":
        return f"Strengths in residual units: ±{strongest:g} adds ±{strongest:g}× the residual norm. {limit}"
    run_dir = Path(spec.output_dir) / spec.name
    norms = saved_norms(run_dir, spec)
    layers = {}
    for model in spec.models:
        card = lookup(model.name)
        if card is not None:
            layers[model.label] = spec.sweep_layers(card.n_layers, model)
    line = equivalents(norms, layers, strongest)
    if line is None:
        return (
            f"Strengths in raw units (× the CAA vector): their size against the residual stream is measured "
            f"by the extraction, and the run's closing table gives it. {limit}"
        )
    return f"{line[:-1]} (from the vectors saved in {run_dir}). {limit}"
