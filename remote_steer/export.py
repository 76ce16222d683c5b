"""Export a run's steering vectors for other tools.

Formats (one file per model × concept, under ``<run>/export/<format>/`` by default):

* ``gguf``: a llama.cpp control vector, as repeng's ``ControlVector.export_gguf``
  writes it: ``general.architecture = "controlvector"``,
  ``controlvector.model_hint`` (the Hugging Face ``model_type``, e.g. ``qwen3``),
  ``controlvector.layer_count``, and one float32 tensor ``direction.{L}`` per layer.
  Layer numbering: llama.cpp adds ``direction.{L}`` to the output of block ``L``
  (0-based; ``build_cvec(cur, il)`` at the end of block ``il``), the same layer our
  ``vectors[L]`` steers, so the names carry our index unchanged. llama.cpp refuses
  ``direction.0`` (its loader has no slot for block 0), so layer 0 is left out.
  Use with ``llama-cli -m MODEL.gguf --control-vector-scaled FILE.gguf:STRENGTH
  --control-vector-layer-range START END`` (llama.cpp's spelling; builds from before its
  comma-separated lists take ``FILE.gguf STRENGTH`` as two arguments), or
  ``--control-vector FILE.gguf`` for strength 1. The vectors are raw CAA vectors: a
  strength means what it means in the sweep (raw units).
* ``safetensors``: plain tensors ``layer.{L}`` ([hidden], float32) for every layer,
  with the run's metadata (model, revision, concept, pairs) in the header.
* ``steering-vectors``: the ``steering-vectors`` library's ``SteeringVector``
  (``layer_activations: dict[int, Tensor]``, ``layer_type``), stored without pickle:
  safetensors tensors ``layer_activations.{L}`` plus ``layer_type`` in the header.
  Load with ``load_steering_vectors_file(path)`` below or by hand:
  ``SteeringVector(layer_activations={int(k.split(".")[1]): t for k, t in
  load_file(path).items()}, layer_type="decoder_block")``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from remote_steer.errors import RemoteSteerError
from remote_steer.vectors import SteeringVector

FORMATS: tuple[str, ...] = ("gguf", "safetensors", "steering-vectors")
_SUFFIX = {"gguf": ".gguf", "safetensors": ".safetensors", "steering-vectors": ".sv.safetensors"}


class ExportError(RemoteSteerError):
    pass


@dataclass(frozen=True)
class Exported:
    model: str
    concept: str
    path: Path
    layers: tuple[int, ...]


def _check_layers(vector: SteeringVector, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(vector.n_layers))
    bad = [layer for layer in layers if not 0 <= layer < vector.n_layers]
    if bad:
        raise ExportError(f"--layer {bad[0]}: {vector.model} has decoder layers 0..{vector.n_layers - 1}")
    return sorted(set(layers))


def _metadata(vector: SteeringVector) -> dict[str, str]:
    return {
        "model": vector.model,
        "revision": vector.revision,
        "concept": vector.concept,
        "pairs": str(vector.n_pairs),
        "source": "remote-steer CAA vector (mean residual difference, raw units)",
    }


def _chmod(path: Path) -> None:
    from remote_steer.rundir import share

    share(path)


def write_gguf(
    vector: SteeringVector, path: Path, layers: Sequence[int] | None = None, model_hint: str = "qwen3"
) -> list[int]:
    import gguf
    import numpy as np

    chosen = [layer for layer in _check_layers(vector, layers) if layer >= 1]
    if not chosen:
        raise ExportError("gguf: llama.cpp cannot steer layer 0 (no direction.0); choose layers ≥ 1")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", len(chosen))
    for layer in chosen:
        writer.add_tensor(f"direction.{layer}", vector.direction(layer).float().numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    _chmod(path)
    return chosen


def read_gguf(path: Path) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """Read a control-vector GGUF back: ({layer: tensor}, metadata)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    meta: dict[str, Any] = {}
    for name, fld in reader.fields.items():
        if name.startswith(("general.architecture", "controlvector.")):
            value = fld.parts[fld.data[0]]
            meta[name] = (
                bytes(value).decode() if fld.types and fld.types[0] == gguf.GGUFValueType.STRING else value[0].item()
            )
    directions = {
        int(t.name.split(".", 1)[1]): torch.from_numpy(t.data.copy()).float().reshape(-1)
        for t in reader.tensors
        if t.name.startswith("direction.")
    }
    return directions, meta


def write_safetensors(vector: SteeringVector, path: Path, layers: Sequence[int] | None = None) -> list[int]:
    from safetensors.torch import save_file

    chosen = _check_layers(vector, layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {f"layer.{layer}": vector.direction(layer).float().contiguous() for layer in chosen}
    save_file(
        tensors,
        str(tmp),
        metadata={**_metadata(vector), "format": "layer.{L}: vector added to the output of decoder layer L (0-based)"},
    )
    os.replace(tmp, path)
    _chmod(path)
    return chosen


def write_steering_vectors(vector: SteeringVector, path: Path, layers: Sequence[int] | None = None) -> list[int]:
    from safetensors.torch import save_file

    chosen = _check_layers(vector, layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {f"layer_activations.{layer}": vector.direction(layer).float().contiguous() for layer in chosen}
    save_file(
        tensors,
        str(tmp),
        metadata={
            **_metadata(vector),
            "layer_type": "decoder_block",
            "format": "steering-vectors SteeringVector(layer_activations, layer_type)",
        },
    )
    os.replace(tmp, path)
    _chmod(path)
    return chosen


def load_steering_vectors_file(path: Path):
    """A ``steering_vectors.SteeringVector`` from a file ``write_steering_vectors`` wrote
    (needs the ``steering-vectors`` package)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from steering_vectors import SteeringVector as LibrarySteeringVector

    with safe_open(str(path), framework="pt") as handle:
        layer_type = (handle.metadata() or {}).get("layer_type", "decoder_block")
    activations = {int(k.split(".", 1)[1]): t for k, t in load_file(str(path)).items()}
    return LibrarySteeringVector(layer_activations=activations, layer_type=layer_type)


def _model_hint(run, model: str) -> str:
    """The Hugging Face ``model_type`` (what repeng writes as the hint), read from the
    loaded checkpoint's config.json when the run recorded a local location."""
    import json

    info = run.manifest.models.get(model) or {}
    location = info.get("location") if isinstance(info, dict) else None
    if location and (Path(location) / "config.json").is_file():
        model_type = json.loads((Path(location) / "config.json").read_text()).get("model_type")
        if model_type:
            return str(model_type)
    return "qwen3_moe" if "moe" in model.lower() else "qwen3"


def export_vectors(
    run_dir: str | Path,
    fmt: str,
    *,
    output: str | Path | None = None,
    models: Sequence[str] | None = None,
    concepts: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
) -> list[Exported]:
    """Write every (or the chosen) model × concept vector of a run in format ``fmt``."""
    from remote_steer.api import open_run
    from remote_steer.errors import filesystem_errors
    from remote_steer.rundir import slug, writable_dir

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    run = open_run(run_dir)
    out_dir = Path(output) if output is not None else run.dir.export_dir(fmt)
    for name, chosen, known in (("--model", models, run.models), ("--concept", concepts, run.concepts)):
        for value in chosen or ():
            if value not in known:
                raise ExportError(f"{name} {value!r}: not in this run (it has: {', '.join(known)})")
    vectors = run.vectors()
    writable_dir(out_dir, "the exported vectors")  # read-only or missing: one line before any file
    written = []
    for (model, concept), vector in vectors.items():
        if (models and model not in models) or (concepts and concept not in concepts):
            continue
        path = out_dir / f"{slug(model)}__{slug(concept)}{_SUFFIX[fmt]}"
        with filesystem_errors("write"):
            if fmt == "gguf":
                kept = write_gguf(vector, path, layers, model_hint=_model_hint(run, model))
            elif fmt == "safetensors":
                kept = write_safetensors(vector, path, layers)
            else:
                kept = write_steering_vectors(vector, path, layers)
        written.append(Exported(model, concept, path, tuple(kept)))
    if not written:
        raise ExportError(f"{run.path}: no vectors to export (vectors/ is empty; did the run extract any?)")
    return written
