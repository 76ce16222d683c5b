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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nnsight
import numpy as np
import torch

from remote_steer.data.prompts import EncodedItem, SteerPositions
from remote_steer.engines import fast_kernel
from remote_steer.engines.batching import chunks, left_pad
from remote_steer.models.loading import LoadedModel
from remote_steer.remote.backend import Backend

BASELINE = -1  # row_layer value of an unsteered row


@dataclass(frozen=True)
class SteerConfig:
    layer: int
    strength: float


def item_config_rows(n_items: int, n_configs: int) -> list[tuple[int, int]]:
    """Rows (item index, configuration index or BASELINE): one unsteered row per item
    first, shared by every layer and strength, then every item × configuration."""
    rows = [(i, BASELINE) for i in range(n_items)]
    return rows + [(i, c) for i in range(n_items) for c in range(n_configs)]


def row_steering(configs: Sequence[SteerConfig], rows: Sequence[tuple[int, int]]):
    """Per-row layer and strength tensors, and the sorted layers the rows steer."""
    row_layer = torch.tensor([configs[c].layer if c != BASELINE else BASELINE for _, c in rows])
    row_strength = torch.tensor([configs[c].strength if c != BASELINE else 0.0 for _, c in rows])
    steered = sorted({configs[c].layer for _, c in rows if c != BASELINE})
    return row_layer, row_strength, steered


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
        request_key: str | None = None,
    ) -> SweepResult:
        """Baseline and steered logit diffs for every item × configuration.

        All batches of one call go in one request (one session locally, one job
        remotely), so a remote sweep makes one request per call.
        """
        rows = item_config_rows(len(items), len(configs))
        batches = [self._batch(items, vectors, configs, batch_rows) for batch_rows in chunks(rows, self.batch_rows)]
        # Only these locals enter the trace body: never `self`, which would ship the
        # engine (and its backend) to the server.
        nn, layers, lm_head = self.model.nn, self.model.layers, self.model.nn.lm_head
        cap = self.model.logit_softcap  # Gemma caps the logits after the output projection
        request = self.backend.open(self.model, "evaluation", request_key)
        diffs = None
        # Trace body: tensors only. Each row is steered at its own layer: at layer l the
        # added term is nonzero only for rows whose configuration names l. Only one
        # scalar per row leaves the trace. (No comment lines inside the session: nnsight
        # ships the body's unparsed source, and a dropped line shifts nested traces.)
        # fmt: off
        with torch.inference_mode():
            if request.must_submit:
                with nn.session(**request.session_kwargs()):
                    diffs = []
                    for batch in batches:
                        prompts, row_item, steered, row_layer, row_strength, prompt_mask, layer_vectors, answers = batch
                        inputs = {name: ids[row_item] for name, ids in prompts.items()}
                        steer_mask = prompt_mask[row_item]
                        with nn.trace(inputs, logits_to_keep=1):
                            for j, layer in enumerate(steered):
                                hidden = layers[layer].output
                                coeff = (row_strength * (row_layer == layer)).to(hidden)
                                delta = coeff[:, None, None] * steer_mask.to(hidden)[:, :, None]
                                delta = delta * layer_vectors[j].to(hidden)
                                layers[layer].output = hidden + delta
                            logits = lm_head.output[:, -1, :]
                            picked = logits.gather(1, answers[row_item].to(logits.device))
                            picked = fast_kernel.softcap(picked, cap).float()
                            diffs.append((picked[:, 0] - picked[:, 1]).cpu())
                    diffs = nnsight.save(diffs)
            diffs = request.result(diffs=diffs)["diffs"]
        # fmt: on
        values = torch.cat(list(diffs)).numpy().astype(np.float64)
        if on_rows is not None:
            on_rows(len(rows))
        n = len(items)
        return SweepResult(baseline=values[:n], steered=values[n:].reshape(n, len(configs)))

    def _batch(self, items, vectors, configs, rows):
        """The tensors one trace needs, built outside the trace. Each prompt travels
        once; the rows (one per configuration) are expanded from it on the server."""
        unique = sorted({i for i, _ in rows})
        slot = {item: k for k, item in enumerate(unique)}
        prompts = left_pad([items[i].prompt_ids for i in unique], self.model.tokenizer.pad_token_id)
        row_item = torch.tensor([slot[i] for i, _ in rows])
        row_layer, row_strength, steered = row_steering(configs, rows)
        prompt_mask = prompts.mask_from([items[i].steer_start(self.positions) for i in unique])
        answers = torch.tensor([[items[i].matching_token, items[i].other_token] for i in unique])
        layer_vectors = vectors[steered]  # only the layers this batch steers
        return prompts.model_inputs(), row_item, steered, row_layer, row_strength, prompt_mask, layer_vectors, answers
