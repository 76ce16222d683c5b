"""Directional ablation (Arditi et al. 2024; docs/depth.md): a direction projected out of
the residual stream at every layer and every position, h ← h − (h · u) u, and the answer's
logit difference read at the end. Is the direction necessary, not only sufficient?

``ablated_logit_diffs`` returns [items, 1 + D]: the unablated logit diff, then one column
per unit direction ``directions[d]`` ([D, hidden]). One request: a trace per batch and
direction, each editing every decoder layer's output in place of the model's own forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import nnsight
import numpy as np
import torch

from remote_steer.data.prompts import EncodedItem
from remote_steer.engines import fast_kernel
from remote_steer.engines.batching import chunks, left_pad
from remote_steer.models.loading import LoadedModel
from remote_steer.remote.backend import Backend


def ablated_logit_diffs(
    model: LoadedModel,
    items: Sequence[EncodedItem],
    directions: torch.Tensor,
    *,
    batch_size: int,
    backend: Backend,
    request_key: str | None = None,
) -> np.ndarray:
    """[items, 1 + D] logit(matching) − logit(other): unablated, then each direction ablated."""
    units = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    batches = []
    for group in chunks(list(items), batch_size):
        batch = left_pad([it.prompt_ids for it in group], model.tokenizer.pad_token_id)
        answers = torch.tensor([[it.matching_token, it.other_token] for it in group])
        batches.append((batch.model_inputs(), answers))
    nn, layers, lm_head = model.nn, model.layers, model.nn.lm_head
    layout = model.kernel_layout() if model.fast_path_refusal is None else None
    cap = layout["softcap"] if layout else getattr(model.nn.config, "final_logit_softcapping", None)
    ablate = [None, *units]
    request = backend.open(model, "ablation", request_key)
    diffs = None
    # fmt: off
    with torch.inference_mode():
        if request.must_submit:
            with nn.session(**request.session_kwargs()):
                diffs = []
                for inputs, answers in batches:
                    for unit in ablate:
                        with nn.trace(inputs, logits_to_keep=1):
                            if unit is not None:
                                for layer in range(len(layers)):
                                    hidden = layers[layer].output
                                    u = unit.to(hidden)
                                    layers[layer].output = hidden - (hidden @ u)[..., None] * u
                            logits = lm_head.output[:, -1, :]
                            picked = logits.gather(1, answers.to(logits.device))
                            picked = fast_kernel.softcap(picked, cap).float()
                            diffs.append((picked[:, 0] - picked[:, 1]).cpu())
                diffs = nnsight.save(diffs)
        diffs = request.result(diffs=diffs)["diffs"]
    # fmt: on
    columns = len(ablate)
    per_batch = [torch.stack(diffs[b * columns : (b + 1) * columns], dim=1) for b in range(len(batches))]
    return torch.cat(per_batch).numpy().astype(np.float64)
