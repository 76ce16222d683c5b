"""CAA extraction: the mean residual-stream difference at the answer token, every layer.

Positive prompt = question + matching answer token, negative = question + the other
one. A batch holds both; one forward pass reads the decoder-layer output at the last
(answer) position of every layer, and the signed sum over rows is reduced inside the
trace, so only a [layers, hidden] tensor leaves the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import nnsight
import torch
from safetensors.torch import load_file, save_file

from remote_steer.remote.backend import Backend
from remote_steer.engines.batching import chunks, left_pad
from remote_steer.models.loading import LoadedModel
from remote_steer.data.prompts import EncodedItem


@dataclass(frozen=True)
class SteeringVectors:
    """One CAA vector per layer for one model × concept."""

    vectors: torch.Tensor  # [layers, hidden], float32 (mean of positive − negative)
    n_pairs: int
    model: str
    revision: str
    concept: str

    @property
    def norms(self) -> list[float]:
        return [float(n) for n in self.vectors.norm(dim=-1)]

    def save(self, path: Path) -> None:
        """Safetensors with metadata; written to a temp file and renamed (atomic)."""
        metadata = {
            "model": self.model,
            "revision": self.revision,
            "dataset": self.concept,
            "pairs": str(self.n_pairs),
            "layers": json.dumps(list(range(self.vectors.shape[0]))),
            "norms": json.dumps([round(n, 6) for n in self.norms]),
            "format": "remote-steer/caa-v1: row i is the vector for decoder layer i",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"vectors": self.vectors.contiguous()}, str(tmp), metadata=metadata)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "SteeringVectors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
        tensors = load_file(str(path))
        return cls(tensors["vectors"], int(meta["pairs"]), meta["model"], meta["revision"], meta["dataset"])


def extract_caa(
    model: LoadedModel,
    items: Sequence[EncodedItem],
    *,
    concept: str,
    batch_size: int,
    backend: Backend,
    on_batch: Callable[[int], None] | None = None,
    request_key: str | None = None,
) -> SteeringVectors:
    """Mean difference of answer-token activations, positive minus negative, per layer.

    All batches go in one request (one session; one job on a remote backend), and the
    per-batch sums are added on the server, so one [layers, hidden] tensor comes back.
    """
    pad_id = model.tokenizer.pad_token_id
    batches = []
    for batch_items in chunks(items, batch_size):
        rows = [list(it.prompt_ids) + [it.matching_token] for it in batch_items]
        rows += [list(it.prompt_ids) + [it.other_token] for it in batch_items]
        n = len(batch_items)
        signs = torch.cat([torch.ones(n), -torch.ones(n)])  # +positive, -negative
        batches.append((left_pad(rows, pad_id).model_inputs(), signs))
    nn, layers, n_layers = model.nn, model.layers, model.n_layers  # the only names the trace body uses
    request = backend.open(model, "extraction", request_key)
    total = None
    with torch.inference_mode():
        if request.must_submit:
            with nn.session(**request.session_kwargs()):
                batch_sums = []
                for inputs, signs in batches:
                    with nn.trace(inputs) as tracer:
                        sums = []
                        for layer in range(n_layers):
                            answer = layers[layer].output[:, -1, :].float()
                            sums.append((signs.to(answer.device)[:, None] * answer).sum(0).cpu())
                        batch_sums.append(torch.stack(sums))
                        tracer.stop()  # nothing after the last layer is needed
                total = nnsight.save(torch.stack(batch_sums).sum(0))
        total = request.result(total=total)["total"]
    if on_batch is not None:
        on_batch(len(items))
    return SteeringVectors(total / len(items), len(items), model.name, model.revision, concept)
