"""Runs grow: a changed spec extends an existing run when its saved results stay right.

Adding a mode, a concept, a model, a layer or a strength (to the sweep or to
generation) is an *extension*: the run keeps everything saved and computes only
what is missing, chunk by chunk and configuration by configuration (a chunk whose
part lacks some configurations gets a second part holding just those).

A spec that *drops* something the run holds (a concept, a model, a mode, a layer, a
strength, control vectors) is refused, naming what it drops, so that the manifest
always describes everything the run holds. Fields that change what a saved number
means are refused too, naming the field: the data split (``seed``, ``data.source``,
``data.max_items``, ``data.test_fraction``, ``data.files``), where and in what units
the vector is added (``evaluation.positions``, ``evaluation.strength_unit``), how items are
cut into parts (``evaluation.chunk_items``, ``evaluation.request_token_budget``),
what a generation is (``generation.max_new_tokens``, ``generation.thinking``,
``generation.answer_tokens``) and a model's weights (``models[NAME].dtype``,
``models[NAME].revision``). Everything else (batch sizes, devices, backends, hosts,
the name and output directory) may change freely.

The manifest's ``spec`` is the latest spec; ``history`` lists every change with its
time and the fields that changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from remote_steer.errors import SpecError
from remote_steer.rundir import RunDir
from remote_steer.rundir.manifest import now

REFUSED = (
    "seed",
    "data.source",
    "data.max_items",
    "data.test_fraction",
    "data.files",
    "evaluation.positions",
    "evaluation.strength_unit",
    "evaluation.chunk_items",
    "evaluation.request_token_budget",
    "generation.max_new_tokens",
    "generation.thinking",
    "generation.answer_tokens",
)
REFUSED_MODEL_FIELDS = ("dtype", "revision")


def _flat(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "models":
            for model in value or ():
                for field, v in model.items():
                    out[f"models[{model.get('name')}].{field}"] = v
        elif isinstance(value, dict) and key != "files":
            for field, v in value.items():
                out[f"{key}.{field}"] = v
        else:
            out[key] = value
    return out


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flat(old), _flat(new)
    return sorted(k for k in set(a) | set(b) if not _same(a.get(k), b.get(k)))


def refused_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Changed fields that would make saved results wrong (models compared by name)."""
    a, b = _flat(old), _flat(new)
    refused = []
    for key in changed_fields(old, new):
        model = re.fullmatch(r"models\[(.*)\]\.(\w+)", key)
        if model:
            if model.group(2) in REFUSED_MODEL_FIELDS and key in a and key in b:
                refused.append(key)
        elif key in REFUSED:
            refused.append(key)
    return refused


def _lost(old: Any, new: Any) -> list[Any]:
    old, new = list(old or ()), list(new or ())
    return [v for v in old if v not in new]


def _shown(values: list[Any]) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def narrowed_fields(
    old: dict[str, Any],
    new: dict[str, Any],
    old_models: dict[str, Any] | None = None,
    new_layers: dict[str, dict[str, list[int]]] | None = None,
) -> list[str]:
    """What ``new`` drops that the run of ``old`` holds, one ``field (drops …)`` each.

    ``old_models``: the manifest's per-model record (its resolved ``sweep_layers`` and
    ``generation_layers``); ``new_layers``: the same, resolved for the new spec, by model
    label. Layers are compared resolved, so a changed ``layer_start_fraction`` counts.
    """

    def label(model: dict[str, Any]) -> str:
        from remote_steer.run.spec import entry_label

        return entry_label(model)

    out: list[str] = []

    def drop(field: str, lost: list[Any]) -> None:
        if lost:
            out.append(f"{field} (drops {_shown(lost)})")

    old_data, new_data = old.get("data", {}), new.get("data", {})
    old_ev, new_ev = old.get("evaluation", {}), new.get("evaluation", {})
    drop("data.concepts", _lost(old_data.get("concepts"), new_data.get("concepts")))
    drop("evaluation.modes", _lost(old_ev.get("modes"), new_ev.get("modes")))
    old_by = {label(m): m for m in old.get("models") or ()}
    new_by = {label(m): m for m in new.get("models") or ()}
    drop("models", [name for name in old_by if name not in new_by])
    logit = "logit" in (old_ev.get("modes") or ()) and "logit" in (new_ev.get("modes") or ())
    for name in (n for n in old_by if n in new_by):
        if logit:
            was = old_by[name].get("strengths") or old_ev.get("strengths")
            now = new_by[name].get("strengths") or new_ev.get("strengths")
            drop(
                f"models[{name}].strengths" if new_by[name].get("strengths") else "evaluation.strengths",
                _lost(was, now),
            )
        held, asked = (old_models or {}).get(name), (new_layers or {}).get(name)
        if isinstance(held, dict) and asked is not None:
            if logit:
                drop(f"sweep layers of {name}", _lost(held.get("sweep_layers"), asked.get("sweep_layers")))
    old_c, new_c = old.get("controls", {}), new.get("controls", {})
    for kind in ("random", "shuffled", "bootstrap"):
        if logit and int(new_c.get(kind) or 0) < int(old_c.get(kind) or 0):
            out.append(f"controls.{kind} ({old_c.get(kind)} → {new_c.get(kind)})")
    if "generation" in (old_ev.get("modes") or ()) and "generation" in (new_ev.get("modes") or ()):
        old_g, new_g = old.get("generation", {}), new.get("generation", {})
        for key, every in (("models", list(old_by)), ("concepts", old_data.get("concepts"))):
            was = old_g.get(key) if old_g.get(key) is not None else every
            now = (
                new_g.get(key)
                if new_g.get(key) is not None
                else list(new_by if key == "models" else new_data.get("concepts") or ())
            )
            drop(f"generation.{key}", _lost(was, now))
        was = old_g.get("strengths") or old_ev.get("strengths")
        now = new_g.get("strengths") or new_ev.get("strengths")
        drop("generation.strengths", _lost(was, now))
        for name in (n for n in old_by if n in new_by):
            held, asked = (old_models or {}).get(name), (new_layers or {}).get(name)
            if isinstance(held, dict) and asked is not None and old_g.get("best_layers") is None:
                drop(
                    f"generation layers of {name}", _lost(held.get("generation_layers"), asked.get("generation_layers"))
                )
    return out


def reconcile(run: RunDir, spec: dict[str, Any], layers: dict[str, dict[str, list[int]]] | None = None) -> list[str]:
    """Accept ``spec`` for the run directory ``run`` (if it holds a run).

    Returns the changed fields (empty for a new run or the same spec). A refused
    change, or one that drops something the run holds, raises SpecError naming the
    field(s); nothing is written then. An accepted change rewrites the manifest's spec
    and appends to its history. ``layers``: per model label, the new spec's resolved
    ``sweep_layers`` and ``generation_layers``.
    """
    manifest = run.read_manifest()
    if manifest is None:
        return []
    old = manifest.spec
    new = json.loads(json.dumps(spec, default=str))
    changed = changed_fields(old, new)
    if not changed:
        return []
    refused = refused_fields(old, new)
    if refused:
        raise SpecError(
            f"{run.root}: {', '.join(refused)} changed since this run was written, which would make its "
            "saved results wrong; use another run name (--name) or --fresh to start over"
        )
    narrowed = narrowed_fields(old, new, manifest.models, layers)
    if narrowed:
        raise SpecError(
            f"{run.root}: this spec drops what the run holds: {'; '.join(narrowed)}; "
            "keep them in the spec (nothing saved is recomputed), or use another run name (--name) or --fresh"
        )
    history = list(manifest.history)
    if not history:
        history.append({"at": manifest.created_at, "change": "created", "fields": []})
    history.append(
        {
            "at": now(),
            "change": "extended",
            "fields": changed,
            "was": {k: v for k, v in _flat(old).items() if k in changed},
        }
    )
    manifest.spec, manifest.history = new, history
    run.write_manifest(manifest)
    return changed


# -- configurations already saved ----------------------------------------------------


def saved_configs(parts: Sequence[Path]) -> set[tuple[int, float]]:
    done: set[tuple[int, float]] = set()
    for part in parts:
        frame = pd.read_parquet(part, columns=["layer", "strength"])
        done.update(zip(frame["layer"].astype(int), frame["strength"].astype(float), strict=True))
    return done


def missing_configs(parts: Sequence[Path], configs: Sequence[Any]) -> tuple[list[int], int]:
    """(indices of ``configs`` the chunk's ``parts`` lack, number of parts the chunk already has)."""
    if not parts:
        return list(range(len(configs))), 0
    done = saved_configs(parts)
    return [c for c, config in enumerate(configs) if (int(config.layer), float(config.strength)) not in done], len(
        parts
    )
