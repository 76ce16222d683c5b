"""Near-floor steered generation: token-identical to ``GenerationEngine``, far less work.

``FastGenerationEngine.run`` returns what ``generation.GenerationEngine.run`` returns
(greedy, so the same token ids; the tests hold them equal, and equal to a plain
PyTorch hook oracle, dense and MoE, thinking on and off, across batch sizes). Per
group of items, in **one nnsight trace** (one request per chunk on a remote backend,
only token ids coming back):

1. the model's own forward pass over the group's prompts, with a key/value cache
   and no vocabulary projection: the prompt once, shared by the baseline row and
   every configuration of each item;
2. the kernel (``fast_gen_kernel.generate``) reruns, per configuration at layer L,
   only the steered window through the layers above L, against the cached prefix;
3. then every row decodes only its own new tokens, steered at its layer at every
   step, and leaves the batch as soon as it reaches end of turn or decides its
   answer (``answer_stop``); rows never decode padding.

Models the fast path does not know fall back to ``GenerationEngine``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import nnsight
import torch

from remote_steer.data.prompts import EncodedItem, SteerPositions
from remote_steer.engines import answer_stop, fast_gen_kernel
from remote_steer.engines.batching import left_pad, trace_inputs
from remote_steer.engines.generation_plain import GenerationEngine, GenerationResult, result_from_rows
from remote_steer.engines.sweep_fast import _NO_LOGITS, _groups, prompt_pass_kwargs, supports_fast_path
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.models.loading import LoadedModel
from remote_steer.remote.backend import Backend

nnsight.register(fast_gen_kernel)  # remote requests carry the kernel's source


@dataclass
class GenerationStats:
    """Work done: prompt tokens × layers, window tokens × layers, and decode rows per step."""

    prompt_token_layers: int = 0
    window_token_layers: int = 0
    decode_token_layers: int = 0  # rows actually decoded, every layer
    decode_steps: int = 0
    rows: int = 0
    traces: int = 0
    rows_per_step: list[list[int]] = field(default_factory=list)  # per group: active rows at each decode step

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_token_layers": self.prompt_token_layers,
            "window_token_layers": self.window_token_layers,
            "decode_token_layers": self.decode_token_layers,
            "decode_steps": self.decode_steps,
            "rows": self.rows,
            "traces": self.traces,
        }


@dataclass
class FastGenerationEngine:
    """Drop-in for ``GenerationEngine``: same constructor, same ``run``, same tokens.

    ``batch_rows`` bounds the rows decoded together: a group (one trace) holds
    ``max(1, batch_rows // (configurations + 1))`` items. ``force_length`` ignores
    the stop rule (benchmarks: every row decodes ``max_new_tokens``).
    """

    model: LoadedModel
    backend: Backend
    batch_rows: int = 32
    positions: SteerPositions = "assistant"
    max_new_tokens: int = 384
    thinking: bool = False
    answer_tokens: int = 16
    force_length: bool = False
    stop_rule: answer_stop.StopRule | None = None  # default: answer_stop.make_stop_rule(model, thinking, answer_tokens)
    stats: GenerationStats = field(default_factory=GenerationStats)

    def run(
        self,
        items: Sequence[EncodedItem],
        vectors: torch.Tensor,
        configs: Sequence[SteerConfig],
        on_rows: Callable[[int], None] | None = None,
        request_key: str | None = None,
    ) -> GenerationResult:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens {self.max_new_tokens}: expected at least 1")
        if not items:
            return GenerationResult((), (), (), ())
        if not supports_fast_path(self.model):
            return GenerationEngine(
                self.model,
                self.backend,
                self.batch_rows,
                self.positions,
                self.max_new_tokens,
                self.thinking,
                self.answer_tokens,
                self.stop_rule,
            ).run(items, vectors, configs, on_rows, request_key)
        n_layers = self.model.n_layers
        for config in configs:
            if not 0 <= config.layer < n_layers:
                raise ValueError(f"steering layer {config.layer} outside the model's {n_layers} layers")
        steered_layers = sorted({c.layer for c in configs})
        layer_vectors = vectors[steered_layers] if steered_layers else vectors[:1]
        vector_rows = {layer: j for j, layer in enumerate(steered_layers)}
        config_layers = [c.layer for c in configs]
        config_strengths = [float(c.strength) for c in configs]
        rule = self.stop_rule or answer_stop.make_stop_rule(self.model, self.thinking, self.answer_tokens)
        index_groups = _groups(items, max(1, self.batch_rows // (len(configs) + 1)))
        groups = [self._group([items[i] for i in index]) for index in index_groups]
        for index, (batch, prefix, _) in zip(index_groups, groups, strict=True):
            self.stats.prompt_token_layers += batch.input_ids.numel() * n_layers
            self.stats.window_token_layers += (
                len(index) * (batch.width - prefix) * sum(n_layers - 1 - c.layer for c in configs)
            )
            self.stats.traces += 1
        nn, lm_head, layers = self.model.nn, self.model.nn.lm_head, self.model.layers
        no_logits, flags, thinking = _NO_LOGITS, rule.flags, bool(rule.thinking)
        answer_tokens, n_new, force = int(rule.answer_tokens), int(self.max_new_tokens), bool(self.force_length)
        layout = self.model.kernel_layout()
        trace_groups = [(*trace_inputs(batch), *rest, prompt_pass_kwargs(self.model)) for batch, *rest in groups]
        request = self.backend.open(self.model, "generation", request_key)
        results = None
        # fmt: off
        with torch.inference_mode():
            if request.must_submit:
                with nn.session(**request.session_kwargs()):
                    results = []
                    for inputs, position_ids, attention_mask, prefix, steer, extra in trace_groups:
                        with nn.trace(inputs, use_cache=True, logits_to_keep=no_logits, **extra):
                            resid = [layers[layer].output[:, prefix:] for layer in range(len(layers))]
                            cache = fast_gen_kernel.output_cache(nn.output)
                            results.append(
                                fast_gen_kernel.generate(
                                    nn.model, lm_head, resid, cache, prefix, position_ids, attention_mask,
                                    steer, layer_vectors, vector_rows, config_layers, config_strengths, flags, thinking,
                                    answer_tokens, n_new, force, layout,
                                )
                            )
                    results = nnsight.save(results)
            results = request.result(results=results)["results"]
        # fmt: on
        k = len(configs)
        raw: list[list[int] | None] = [None] * (len(items) * (k + 1))
        n = len(items)
        for index, (ids, decoded) in zip(index_groups, results, strict=True):
            self.stats.rows += ids.shape[0]
            self.stats.decode_steps += int(decoded.numel())
            self.stats.decode_token_layers += int(decoded.sum()) * n_layers
            self.stats.rows_per_step.append([int(x) for x in decoded])
            g = len(index)
            for r in range(ids.shape[0]):
                row = ids[r].tolist()
                row = row[: row.index(-1)] if -1 in row else row
                local, c = (r, -1) if r < g else ((r - g) // k, (r - g) % k)
                item = index[local]
                raw[item if c < 0 else n + item * k + c] = row
        rows = [row for row in raw if row is not None]
        assert len(rows) == len(raw), "every group decodes all its rows"
        if self.force_length:  # benchmarks: every row as decoded, no stop rule
            cuts = [(tuple(row), answer_stop.BUDGET) for row in rows]
        else:
            cuts = [answer_stop.cut(row, rule) for row in rows]
        if on_rows is not None:
            on_rows(len(rows))
        return result_from_rows(self.model.tokenizer, n, k, cuts)

    def _group(self, group: Sequence[EncodedItem]):
        batch = left_pad([it.prompt_ids for it in group], self.model.tokenizer.pad_token_id)
        starts = [it.steer_start(self.positions) for it in group]
        window = max(len(it.prompt_ids) - s for it, s in zip(group, starts, strict=True))
        prefix = batch.width - window
        steer = batch.mask_from(starts)[:, prefix:].float()
        return batch, prefix, steer
