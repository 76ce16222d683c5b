"""The logit-diff steering engine: many (layer, strength) configurations per forward pass.

For each held-out item it records logit(matching) − logit(other) at the answer
position, unsteered once (the baseline) and under each configuration, where a
configuration adds ``strength × vector[layer]`` to the residual stream (the
decoder-layer output) at the steered positions.

Rows of one batch are (item, configuration) pairs; each row carries its own layer
and strength, so a single trace steers every row at its own layer. Only one scalar
per row leaves the trace. This module is the engine's whole surface:
``SteerConfig``, ``SweepResult`` and ``LogitDiffEngine.run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import nnsight
import numpy as np
import torch

from .backend import Backend
from .batching import chunks, left_pad
from .models import LoadedModel
from .prompts import EncodedItem, SteerPositions

BASELINE = -1  # row_layer value of an unsteered row


@dataclass(frozen=True)
class SteerConfig:
    layer: int
    strength: float


@dataclass(frozen=True)
class SweepResult:
    baseline: np.ndarray  # [items]
    steered: np.ndarray  # [items, configs]


@dataclass
class LogitDiffEngine:
    model: LoadedModel
    backend: Backend
    batch_rows: int = 64  # rows (item × configuration) per forward pass
    positions: SteerPositions = "assistant"

    def run(
        self,
        items: Sequence[EncodedItem],
        vectors: torch.Tensor,
        configs: Sequence[SteerConfig],
        on_rows: Callable[[int], None] | None = None,
    ) -> SweepResult:
        """Baseline and steered logit diffs for every item × configuration."""
        # Row r = (item index, configuration index or BASELINE). The baseline is one
        # row per item, shared by every layer and strength.
        rows = [(i, BASELINE) for i in range(len(items))]
        rows += [(i, c) for i in range(len(items)) for c in range(len(configs))]
        out = torch.empty(len(rows), dtype=torch.float32)
        with torch.inference_mode():
            for start, batch_rows in zip(range(0, len(rows), self.batch_rows), chunks(rows, self.batch_rows)):
                out[start : start + len(batch_rows)] = self._run_rows(items, vectors, configs, batch_rows)
                if on_rows is not None:
                    on_rows(len(batch_rows))
        values = out.numpy().astype(np.float64)
        n = len(items)
        return SweepResult(baseline=values[:n], steered=values[n:].reshape(n, len(configs)))

    def _run_rows(
        self,
        items: Sequence[EncodedItem],
        vectors: torch.Tensor,
        configs: Sequence[SteerConfig],
        rows: Sequence[tuple[int, int]],
    ) -> torch.Tensor:
        batch = left_pad([items[i].prompt_ids for i, _ in rows], self.model.tokenizer.pad_token_id)
        row_layer = torch.tensor([configs[c].layer if c != BASELINE else BASELINE for _, c in rows])
        row_strength = torch.tensor([configs[c].strength if c != BASELINE else 0.0 for _, c in rows])
        steer_mask = batch.mask_from([items[i].steer_start(self.positions) for i, _ in rows])
        answer_tokens = torch.tensor([[items[i].matching_token, items[i].other_token] for i, _ in rows])
        steered_layers = sorted({configs[c].layer for _, c in rows if c != BASELINE})
        layer_vectors = vectors[steered_layers]  # only the layers this batch steers
        layers = self.model.layers
        lm_head = self.model.nn.lm_head
        # Trace body: tensors only. Each row is steered at its own layer: at layer l the
        # added term is nonzero only for rows whose configuration names l.
        with self.model.nn.trace(
            batch.model_inputs(), logits_to_keep=1, **self.backend.trace_kwargs("evaluation")
        ):
            for j, layer in enumerate(steered_layers):
                hidden = layers[layer].output
                coeff = (row_strength * (row_layer == layer)).to(hidden)
                mask = steer_mask.to(hidden)
                layers[layer].output = hidden + coeff[:, None, None] * mask[:, :, None] * layer_vectors[j].to(hidden)
            logits = lm_head.output[:, -1, :]
            picked = logits.gather(1, answer_tokens.to(logits.device)).float()
            diffs = nnsight.save((picked[:, 0] - picked[:, 1]).cpu())
        return diffs
