"""A steering vector you can apply: inside an nnsight trace or as a PyTorch hook.

``SteeringVector`` holds one CAA vector per decoder layer of one model × concept
(the rows of ``<run>/vectors/<model>/<concept>.safetensors``). Applying it at layer
``L`` and strength ``s`` adds to the residual stream (the output of decoder layer
``L``) at every position:

* ``units="raw"``: ``s × v[L]``, exactly what the sweep adds (its strengths are raw);
* ``units="residual"``: ``s × ‖h‖ × v[L] / ‖v[L]‖`` — the unit direction scaled by
  each position's own residual norm, so ``s = 0.1`` pushes by a tenth of the
  residual stream whatever the layer's scale.

Two ways to apply it:

* in an nnsight trace (local or remote): ``vector.add(hidden, layer, strength)`` is
  plain tensor arithmetic on the layer output. For a remote trace keep the body
  tensor-only: take ``d = vector.direction(L)`` outside the ``with`` and write
  ``h + s * d`` (raw) or ``h + s * h.norm(dim=-1, keepdim=True) * d / d.norm()``
  (residual) inside it;
* as a context manager on a plain PyTorch/transformers model (no nnsight):
  ``with vector.steer(model, layer=L, strength=s): model(ids)`` — a forward hook on
  decoder layer ``L``, removed on exit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

Units = Literal["raw", "residual"]
UNITS: tuple[str, ...] = ("raw", "residual")


def _check_units(units: str) -> None:
    if units not in UNITS:
        raise ValueError(f"units {units!r}: expected 'raw' or 'residual'")


def steering_addend(hidden: torch.Tensor, direction: torch.Tensor, strength: float, units: str = "raw") -> torch.Tensor:
    """What steering adds to ``hidden`` ([..., hidden_size]) for one layer's vector."""
    _check_units(units)
    d = direction.to(device=hidden.device, dtype=hidden.dtype)
    if units == "raw":
        return strength * d
    return strength * hidden.norm(dim=-1, keepdim=True) * (d / d.norm())


def decoder_layers(model: Any) -> Any:
    """The decoder-layer list of a transformers causal LM (or an nnsight wrapper's module)."""
    module = getattr(model, "_module", model)  # an nnsight model wraps the torch module
    for path in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers", "layers"):
        obj = module
        try:
            for name in path.split("."):
                obj = getattr(obj, name)
        except AttributeError:
            continue
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ValueError(f"{type(module).__name__}: cannot find its decoder layers (looked for model.layers and similar)")


@dataclass(frozen=True)
class SteeringVector:
    """One CAA vector per decoder layer for one model × concept.

    ``vectors[i]`` is the vector of decoder layer ``i`` (0-based, the layer whose
    output it is added to): the mean residual difference, matching minus other
    answer, over ``n_pairs`` training pairs.
    """

    vectors: torch.Tensor  # [layers, hidden], float32
    model: str = ""
    concept: str = ""
    revision: str = ""
    n_pairs: int = 0
    metadata: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_layers(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def norms(self) -> list[float]:
        return [float(n) for n in self.vectors.norm(dim=-1)]

    def direction(self, layer: int) -> torch.Tensor:
        """The raw vector of decoder layer ``layer`` ([hidden], float32)."""
        if not -self.n_layers <= layer < self.n_layers:
            raise IndexError(f"layer {layer}: {self.model or 'this model'} has layers 0..{self.n_layers - 1}")
        return self.vectors[layer]

    def add(self, hidden: torch.Tensor, layer: int, strength: float, units: Units = "raw") -> torch.Tensor:
        """``hidden`` steered: use inside an nnsight trace as
        ``layers[L].output = vector.add(layers[L].output, L, s)``."""
        return hidden + steering_addend(hidden, self.direction(layer), strength, units)

    @contextmanager
    def steer(self, model: Any, layer: int, strength: float, units: Units = "raw") -> Iterator[None]:
        """Steer a plain PyTorch model while the ``with`` block runs (a forward hook on
        decoder layer ``layer``; every position, generation included)."""
        _check_units(units)
        direction = self.direction(layer)
        module = decoder_layers(model)[layer]

        def hook(_module, _inputs, output):
            if isinstance(output, tuple):
                return (output[0] + steering_addend(output[0], direction, strength, units),) + output[1:]
            return output + steering_addend(output, direction, strength, units)

        handle = module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    # -- files -----------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Read a run's ``vectors/<model>/<concept>.safetensors``."""
        from remote_steer.rundir.vectorfile import read_vectors

        vectors, meta = read_vectors(Path(path))
        return cls(
            vectors.float(),
            model=meta.get("model", ""),
            concept=meta.get("dataset", ""),
            revision=meta.get("revision", ""),
            n_pairs=int(meta.get("pairs", 0)),
            metadata=meta,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "concept": self.concept,
            "revision": self.revision,
            "n_pairs": self.n_pairs,
            "layers": self.n_layers,
            "hidden_size": self.hidden_size,
            "norms": json.dumps([round(n, 4) for n in self.norms]),
        }
