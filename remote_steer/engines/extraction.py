"""CAA extraction: the mean residual-stream difference at the answer token, every layer.

Positive prompt = question + matching answer token, negative = question + the other
one. A batch holds both; one forward pass reads the decoder-layer output at the last
(answer) position of every layer, and the signed sum over rows is reduced inside the
trace, so only a [layers, hidden] tensor leaves the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nnsight
import torch

from remote_steer.data.prompts import EncodedItem, SteerPositions
from remote_steer.engines import fast_kernel
from remote_steer.engines.batching import left_pad
from remote_steer.models.loading import LoadedModel
from remote_steer.remote.backend import Backend
from remote_steer.rundir.vectorfile import read_vectors, vector_metadata, write_vectors


@dataclass(frozen=True)
class SteeringVectors:
    """One CAA vector per layer for one model × concept."""

    vectors: torch.Tensor  # [layers, hidden], float32 (mean of positive − negative)
    n_pairs: int
    model: str
    revision: str
    concept: str
    # [layers]: mean L2 norm of the residual stream (decoder-layer output) over the steered
    # positions of the training prompts, read in the extraction pass; None in older files
    residual_norms: torch.Tensor | None = None
    positions: str = "assistant"  # which positions residual_norms averages over

    @property
    def norms(self) -> list[float]:
        return [float(n) for n in self.vectors.norm(dim=-1)]

    def scaled(self, unit: str) -> torch.Tensor:
        """The vectors a strength of 1 adds: raw (the mean difference itself) or, with
        ``unit="residual"``, each layer's vector rescaled to the mean residual norm there."""
        if unit == "raw":
            return self.vectors
        if self.residual_norms is None:
            raise ValueError("residual strength units need residual norms; re-extract the vectors")
        return self.vectors * residual_scale(self.vectors, self.residual_norms)[:, None]

    def save(self, path: Path) -> None:
        """The run directory's vector file (``rundir/vectorfile.py``), written atomically."""
        meta = vector_metadata(
            self.vectors,
            model=self.model,
            revision=self.revision,
            concept=self.concept,
            n_pairs=self.n_pairs,
            residual_norms=self.residual_norms,
            positions=self.positions,
        )
        write_vectors(path, self.vectors, meta)

    @classmethod
    def load(cls, path: Path) -> SteeringVectors:
        """A vector file; a damaged one is one ``RunDamaged`` line naming it."""
        vectors, meta = read_vectors(path)
        residual = torch.tensor(json.loads(meta["residual_norms"])) if "residual_norms" in meta else None
        return cls(
            vectors,
            int(meta.get("pairs", 0)),
            meta.get("model", ""),
            meta.get("revision", ""),
            meta.get("dataset", ""),
            residual,
            meta.get("residual_positions", "assistant"),
        )


def residual_scale(vectors: torch.Tensor, residual_norms: torch.Tensor) -> torch.Tensor:
    """[layers] factor taking each layer's vector to the norm of that layer's residual stream
    (0 where the vector is zero)."""
    norms = vectors.norm(dim=-1)
    return torch.where(norms > 0, residual_norms.to(norms.dtype) / norms.clamp_min(1e-30), torch.zeros_like(norms))


def item_weights(weights: torch.Tensor | None, n_items: int) -> torch.Tensor:
    """[V, items] per-item weights, the all-ones row first (the CAA mean vector itself)."""
    ones = torch.ones(1, n_items)
    return ones if weights is None else torch.cat([ones, weights.to(torch.float32).reshape(-1, n_items)])


def extract_caa(  # noqa: PLR0913 - keyword options, called so by the stages and ~40 tests
    model: LoadedModel,
    items: Sequence[EncodedItem],
    *,
    concept: str,
    batch_size: int,
    backend: Backend,
    on_batch: Callable[[int], None] | None = None,
    request_key: str | None = None,
    positions: SteerPositions = "assistant",
    weights: torch.Tensor | None = None,
) -> SteeringVectors:
    """Mean difference of answer-token activations, positive minus negative, per layer.

    All batches go in one request (one session; one job on a remote backend), and the
    per-batch sums are added on the server, so one [layers, hidden] tensor comes back.
    The same pass reads the mean residual norm at the steered positions (``positions``).
    ``weights`` ([V, items]): see ``extract_caa_weighted``; here only the mean vector returns.
    """
    return extract_caa_weighted(
        model,
        items,
        concept=concept,
        batch_size=batch_size,
        backend=backend,
        on_batch=on_batch,
        request_key=request_key,
        positions=positions,
        weights=weights,
    )[0]


def extract_caa_weighted(  # noqa: PLR0913 - keyword options, called so by the stages and ~40 tests
    model: LoadedModel,
    items: Sequence[EncodedItem],
    *,
    concept: str,
    batch_size: int,
    backend: Backend,
    on_batch: Callable[[int], None] | None = None,
    request_key: str | None = None,
    positions: SteerPositions = "assistant",
    weights: torch.Tensor | None = None,
) -> tuple[SteeringVectors, torch.Tensor]:
    """``extract_caa`` plus V extra vectors Σ_i weights[v, i] · d_i / items, where d_i is
    item i's positive − negative activation (bootstrap counts, ±1 label shuffles). The
    [V, items] weights are applied inside the trace. Returns (vectors, [V, layers, hidden])."""
    pad_id = model.tokenizer.pad_token_id
    all_weights = item_weights(weights, len(items))
    batches = []
    for first in range(0, len(items), batch_size):
        batch_items = items[first : first + batch_size]
        rows = [list(it.prompt_ids) + [it.matching_token] for it in batch_items]
        rows += [list(it.prompt_ids) + [it.other_token] for it in batch_items]
        w = all_weights[:, first : first + len(batch_items)]
        signed = torch.cat([w, -w], dim=1)  # +positive, -negative
        batch = left_pad(rows, pad_id)
        # steered positions of the prompt (the appended answer token excluded), each prompt once
        mask = batch.mask_from([it.steer_start(positions) for it in batch_items] * 2)
        mask[:, -1] = False
        mask[len(batch_items) :] = False
        batches.append((batch.model_inputs(), signed, mask))
    count = sum(float(m.sum()) for _, _, m in batches)
    nn, layers, n_layers = model.nn, model.layers, model.n_layers  # the only names the trace body uses
    request = backend.open(model, "extraction", request_key)
    total = norms = None
    # fmt: off
    with torch.inference_mode():
        if request.must_submit:
            with nn.session(**request.session_kwargs()):
                batch_sums = []
                norm_sums = []
                for inputs, signed, mask in batches:
                    with nn.trace(inputs) as tracer:
                        sums = []
                        layer_norms = []
                        for layer in range(n_layers):
                            hidden = layers[layer].output
                            answer = hidden[:, -1, :].float()
                            sums.append((signed.to(answer.device) @ answer).cpu())
                            layer_norms.append(fast_kernel.masked_norm(hidden, mask))
                        batch_sums.append(torch.stack(sums))
                        norm_sums.append(torch.stack(layer_norms))
                        tracer.stop()
                total = nnsight.save(torch.stack(batch_sums).sum(0))
                norms = nnsight.save(torch.stack(norm_sums).sum(0))
        got = request.result(total=total, norms=norms)
        total, norms = got["total"], got["norms"]
    # fmt: on
    if on_batch is not None:
        on_batch(len(items))
    total = total / len(items)  # [layers, V, hidden]
    vectors = SteeringVectors(
        total[:, 0].contiguous(), len(items), model.name, model.revision, concept, norms / max(count, 1.0), positions
    )
    return vectors, total[:, 1:].transpose(0, 1).contiguous()
