"""The vector file format, once: ``vectors/<model>/<concept>.safetensors``.

One tensor ``vectors`` [layers, hidden] (row i: decoder layer i) and string metadata:
``model``, ``revision``, ``dataset`` (the concept), ``pairs``, ``layers`` and ``norms``
(JSON lists), ``format``; from the version that measured them, ``residual_norms`` (JSON
list: mean residual norm per layer at the steered positions) and ``residual_positions``;
and ``sha256`` of the tensor's bytes (safetensors has no checksum of its own; files
written before it was kept are read unchecked). Control vectors (shuffled labels,
bootstrap) sit beside it in ``<concept>.controls.safetensors``: one [vectors, layers,
hidden] tensor per kind, each with its ``sha256:<kind>``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from remote_steer.rundir.files import atomic_write
from remote_steer.rundir.manifest import RunDamaged

FORMAT = "remote-steer/caa-v1: row i is the vector for decoder layer i"
CONTROLS_FORMAT = "remote-steer/caa-controls-v1: [vectors, layers, hidden] per kind (shuffled labels, bootstrap)"


def vector_metadata(
    vectors: torch.Tensor,
    *,
    model: str,
    revision: str,
    concept: str,
    n_pairs: int,
    residual_norms: torch.Tensor | None = None,
    positions: str = "assistant",
) -> dict[str, str]:
    """The metadata a vector file carries (every value a string, as safetensors wants)."""
    meta = {
        "model": model,
        "revision": revision,
        "dataset": concept,
        "pairs": str(n_pairs),
        "layers": json.dumps(list(range(vectors.shape[0]))),
        "norms": json.dumps([round(float(n), 6) for n in vectors.norm(dim=-1)]),
        "format": FORMAT,
    }
    if residual_norms is not None:
        meta["residual_norms"] = json.dumps([round(float(n), 6) for n in residual_norms])
        meta["residual_positions"] = positions
    return meta


def write_vectors(path: Path, vectors: torch.Tensor, metadata: dict[str, str]) -> None:
    """Safetensors with ``metadata`` (see ``vector_metadata``), written atomically."""
    from safetensors.torch import save_file

    tensor = vectors.contiguous()
    metadata = {**metadata, "sha256": _digest(tensor)}
    atomic_write(path, lambda tmp: save_file({"vectors": tensor}, str(tmp), metadata=metadata))


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _damaged(path: Path, why: str) -> RunDamaged:
    return RunDamaged(
        f"{path}: damaged vector file ({why}); delete it and rerun `remote-steer run` with the same spec "
        "to extract it again (same data and seed: the same vector)"
    )


def read_vectors(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    """(vectors [layers, hidden], metadata); a damaged file is one ``RunDamaged`` line."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            tensor = handle.get_tensor("vectors")
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as error:
        raise _damaged(path, str(error).splitlines()[0][:80] if str(error) else type(error).__name__) from None
    if tensor.dim() != 2:
        raise _damaged(path, f"vectors has shape {tuple(tensor.shape)}, expected [layers, hidden]")
    if "sha256" in meta and meta["sha256"] != _digest(tensor):
        raise _damaged(path, "its checksum does not match")
    return tensor, meta


def write_controls(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    kept = {k: v.contiguous() for k, v in tensors.items()}
    metadata = {"format": CONTROLS_FORMAT, **{f"sha256:{k}": _digest(v) for k, v in kept.items()}}
    atomic_write(path, lambda tmp: save_file(kept, str(tmp), metadata=metadata))


def read_controls(path: Path) -> dict[str, torch.Tensor]:
    """{kind: [n, layers, hidden]} ({} if the file is absent)."""
    from safetensors import SafetensorError, safe_open

    if not path.exists():
        return {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise _damaged(path, str(error).splitlines()[0][:80] if str(error) else type(error).__name__) from None
    for kind, tensor in tensors.items():
        if meta.get(f"sha256:{kind}", _digest(tensor)) != _digest(tensor):
            raise _damaged(path, f"the checksum of {kind} does not match")
    return tensors
