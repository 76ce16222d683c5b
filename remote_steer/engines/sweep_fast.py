"""Near-floor logit-diff sweeps and CAA extraction, numerically equal to the plain engines.

``FastLogitDiffEngine`` returns what ``sweep_plain.LogitDiffEngine`` returns and
``extract_caa_fast`` what ``extraction.extract_caa`` returns (to float rounding; the
tests hold them to 1e-4), with far less work. Each shortcut follows from two facts:
attention is causal, and the steering edit is added to the *output* of layer L at
positions ≥ p (the first steered position). So a steered run equals the unsteered
one at every position before p, at every layer, and at every position up to layer L.

Per group of items, in **one nnsight trace** (one request on a remote backend):

1. **The prompt once.** The model's own forward pass runs the left-padded prompts
   through every layer with a key/value cache and no vocabulary projection
   (``logits_to_keep`` is empty). It is also the unsteered baseline. The residual
   stream after every layer is read at the window columns only (the steered
   positions through the answer position).
2. **Only the window, only above L.** After the forward, the trace body calls the
   decoder layers ad hoc (``fast_kernel.sweep``): a configuration (L, s) restarts
   from the residual after layer L, adds ``s × vector[L]`` at the steered positions
   and runs only the window through layers L+1..last, attending to the cached prefix
   keys/values of each layer. The cache is read, never extended, so one prefix
   serves every configuration.
3. **Configurations batched as a staircase.** Each (item, configuration) row joins
   the batch at its own layer, so one pass up the stack serves the whole sweep.
4. **Two logits.** At the answer position only the final norm and the two
   answer-token rows of the output projection are computed.
5. **Extraction** (``extract_caa_fast``): the prompt once, then the positive and
   negative answer tokens as two one-token rows against its cache, reading the
   decoder-layer output at every layer in the same pass.

For ``"all"``-positions steering the window is the whole prompt, so what is shared
is the baseline and every layer up to L. Strength 0 adds exactly zero, so those
columns are the baseline and cost nothing.

The kernel module is shipped by value to the server (``nnsight.register``), so the
``simulated-remote`` backend runs the same code and keeps every intermediate state
on the model's side: only [items, configurations] numbers come back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Required, TypedDict, Unpack

import nnsight
import numpy as np
import torch

from remote_steer.data.prompts import EncodedItem, SteerPositions
from remote_steer.engines import fast_kernel
from remote_steer.engines.batching import TokenBatch, left_pad, trace_inputs
from remote_steer.engines.extraction import SteeringVectors, extract_caa_weighted, item_weights
from remote_steer.engines.protocol import fast_path
from remote_steer.engines.sweep_plain import LogitDiffEngine, SteerConfig, SweepResult
from remote_steer.models.loading import LoadedModel
from remote_steer.remote.backend import Backend

nnsight.register(fast_kernel)  # remote requests carry the kernel's source


def supports_fast_path(model: LoadedModel) -> bool:
    """The model's architecture is in ``models.architectures``' table and laid out as it says
    (``protocol.fast_path`` says why not, in one line)."""
    return fast_path(model)[0]


def prompt_pass_kwargs(model: LoadedModel) -> dict:
    """Extra arguments of the prompt pass. A model with sliding-window layers gets a plain
    full-length cache: transformers' own would keep only the last window of each sliding
    layer, and the kernels read every prefix column (the sliding mask limits what attends)."""
    if not model.kernel_layout()["sliding"]:
        return {}
    import inspect

    from transformers import DynamicCache

    forward = inspect.signature(model.nn._module.forward).parameters
    return {("cache" if "cache" in forward else "past_key_values"): DynamicCache()}


@dataclass
class WorkStats:
    """Token × layer work executed, padding included (benchmarks report it)."""

    prompt_token_layers: int = 0  # prompt passes: every column of every row, every layer
    steered_token_layers: int = 0  # window rows through the layers above their steered layer
    answer_token_layers: int = 0  # extraction: the appended answer tokens, every layer
    padding_token_layers: int = 0  # the part of prompt_token_layers spent on left padding
    answer_logit_rows: int = 0  # output-projection rows computed (two per scored row)
    traces: int = 0

    @property
    def token_layers(self) -> int:
        return self.prompt_token_layers + self.steered_token_layers + self.answer_token_layers

    def as_dict(self) -> dict[str, int]:
        return {
            "token_layers": self.token_layers,
            "prompt_token_layers": self.prompt_token_layers,
            "steered_token_layers": self.steered_token_layers,
            "answer_token_layers": self.answer_token_layers,
            "padding_token_layers": self.padding_token_layers,
            "answer_logit_rows": self.answer_logit_rows,
            "traces": self.traces,
        }


_NO_LOGITS = torch.empty(0, dtype=torch.long)  # logits_to_keep: project no position onto the vocabulary


def _groups(items: Sequence[EncodedItem], size: int, max_padding: float = 0.1) -> list[list[int]]:
    """Item indices in groups of at most ``size``, by prompt length: a group closes early
    rather than let left padding exceed ``max_padding`` of its tokens. Results go back
    by index, so the order is free."""
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt_ids))
    groups: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in order:
        length = len(items[i].prompt_ids)
        padded = (len(current) + 1) * length  # sorted: the new item is the longest
        if current and (len(current) == size or padded - tokens - length > max_padding * padded):
            groups.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += length
    if current:
        groups.append(current)
    return groups


def _count_prompt(stats: WorkStats, batch: TokenBatch, n_layers: int) -> None:
    stats.prompt_token_layers += batch.input_ids.numel() * n_layers
    stats.padding_token_layers += int(batch.pad.sum()) * n_layers
    stats.traces += 1


@dataclass
class FastLogitDiffEngine:
    """Drop-in for ``LogitDiffEngine``: same constructor, same ``run``, same numbers.

    ``batch_rows`` bounds the (item × configuration) rows in flight: a group (one
    trace) holds ``max(1, batch_rows // configurations)`` items, and a staircase
    block at most ``batch_rows`` rows. Items are grouped by prompt length; results
    come back in input order. All groups of one call go in one request (one
    session locally, one job remotely). Models the fast path does not know fall
    back to ``LogitDiffEngine``.
    """

    model: LoadedModel
    backend: Backend
    batch_rows: int = 64
    positions: SteerPositions = "assistant"
    stats: WorkStats = field(default_factory=WorkStats)
    # set (locally): every prompt pass of ``run_vectors`` is kept here for ``run_held``
    hold: HeldPrompts | None = None

    def run(
        self,
        items: Sequence[EncodedItem],
        vectors: torch.Tensor,
        configs: Sequence[SteerConfig],
        on_rows: Callable[[int], None] | None = None,
        request_key: str | None = None,
    ) -> SweepResult:
        """Baseline and steered logit diffs for every item × configuration."""
        if not supports_fast_path(self.model):
            return LogitDiffEngine(self.model, self.backend, self.batch_rows, self.positions).run(
                items, vectors, configs, on_rows, request_key
            )
        baseline, steered = self.run_vectors(items, vectors[None], configs, on_rows, request_key)
        return SweepResult(baseline=baseline, steered=steered[:, 0])

    def run_vectors(
        self,
        items: Sequence[EncodedItem],
        vector_sets: torch.Tensor,
        configs: Sequence[SteerConfig],
        on_rows: Callable[[int], None] | None = None,
        request_key: str | None = None,
        only: Sequence[Sequence[bool]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Baseline [items] and steered [items, V, configurations] logit diffs for V vector
        sets ([V, layers, hidden]) in one request: each (vector, configuration) pair is one
        more configuration of the staircase, and the prompt pass is shared by all of them
        (control and bootstrap vectors cost only their steered rows). ``only[v][c]`` False:
        that pair is not computed (its entry is NaN), e.g. a check needed at a few
        configurations only."""
        if not supports_fast_path(self.model):
            if only is not None:
                raise ValueError("run_vectors(only=...) needs the fast path")
            return self._plain_vectors(items, vector_sets, configs, on_rows, request_key)
        staircase = _Staircase.of(vector_sets, configs, self.model.n_layers, only)
        active, layer_vectors, vector_rows = staircase.active, staircase.vectors, staircase.rows
        config_layers, config_strengths = staircase.layers, staircase.strengths
        index_groups = _groups(items, max(1, self.batch_rows // max(1, len(active))))
        groups = [self._group([items[i] for i in index]) for index in index_groups]
        for index, group in zip(index_groups, groups, strict=True):
            self._count(group[0], [items[i] for i in index], [configs[c] for _, c in active])
        # Only these locals enter the session body: never `self`, which would ship the
        # engine (and its backend) to the server.
        block_rows = self._fit_block_rows(items, index_groups)
        nn, layers, lm_head = self.model.nn, self.model.layers, self.model.nn.lm_head
        no_logits, layout = _NO_LOGITS, self.model.kernel_layout()
        trace_groups = [
            (*trace_inputs(batch), prefix, steer, tokens, prompt_pass_kwargs(self.model))
            for batch, prefix, steer, tokens in groups
        ]
        keeping = self.hold is not None and self.backend.kind == "local"  # a server keeps nothing for later
        request = self.backend.open(self.model, "evaluation", request_key)
        results = held = None
        # Session body (no comment lines inside: nnsight ships its unparsed source).
        # Per group: the model's forward reads the window of every layer, then the
        # kernel runs every steered continuation on the model's side.
        # fmt: off
        with torch.inference_mode():
            if request.must_submit:
                with nn.session(**request.session_kwargs()):
                    results = []
                    held = []
                    for inputs, position_ids, attention_mask, prefix, steer, tokens, extra in trace_groups:
                        with nn.trace(inputs, use_cache=True, logits_to_keep=no_logits, **extra):
                            resid = [layers[layer].output[:, prefix:] for layer in range(len(layers))]
                            cache = fast_kernel.output_cache(nn.output)
                            results.append(
                                fast_kernel.sweep(
                                    nn.model, lm_head, resid, cache, prefix, position_ids,
                                    attention_mask, steer, layer_vectors, vector_rows, config_layers,
                                    config_strengths, tokens, block_rows, layout,
                                )
                            )
                            if keeping:
                                held.append((resid, fast_kernel.cache_tensors(cache, prefix)))
                    results = nnsight.save(results)
                    held = nnsight.save(held)
            results = request.result(results=results)["results"]
        # fmt: on
        if keeping and self.hold is not None and held:
            for index, group, kept in zip(index_groups, groups, held, strict=True):
                self.hold.keep([items[i].item_id for i in index], group, *kept)
        return self._collect(len(items), index_groups, results, staircase, configs, on_rows, only)

    def run_held(
        self,
        items: Sequence[EncodedItem],
        vector_sets: torch.Tensor,
        configs: Sequence[SteerConfig],
        only: Sequence[Sequence[bool]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``run_vectors`` over prompt passes ``hold`` kept from an earlier call: no prompt
        pass, only the steered rows (locally; every item must be held)."""
        assert self.hold is not None
        staircase = _Staircase.of(vector_sets, configs, self.model.n_layers, only)
        missing = [layer for layer in staircase.layers if layer not in self.hold.layers]
        if missing:
            raise ValueError(f"run_held: layer {missing[0]} is not among the held layers {sorted(self.hold.layers)}")
        found = [self.hold.find(it.item_id) for it in items]
        by_group: dict[int, list[int]] = {}
        for i, (g, _) in enumerate(found):
            by_group.setdefault(g, []).append(i)
        hf = self.model.nn._module
        layout, results, index_groups = self.model.kernel_layout(), [], []
        block_rows = self._fit_block_rows(items, [list(range(len(items)))])
        with torch.inference_mode():
            for g, index in by_group.items():
                group = self.hold.groups[g]
                rows = [found[i][1] for i in index]
                whole = rows == list(range(len(group.item_ids)))
                part = group if whole else group.select(torch.tensor(rows))  # no copy for a whole group
                self.stats.steered_token_layers += (
                    len(index) * part.window * sum(self.model.n_layers - 1 - layer for layer in staircase.layers)
                )
                self.stats.answer_logit_rows += 2 * len(index) * (len(staircase.layers) + 1)
                results.append(
                    fast_kernel.sweep(
                        hf.model, hf.lm_head, part.resid, part, part.prefix, part.position_ids,
                        part.attention_mask, part.steer, staircase.vectors, staircase.rows, staircase.layers,
                        staircase.strengths, part.tokens, block_rows, layout,
                    )
                )  # fmt: skip
                index_groups.append(index)
        return self._collect(len(items), index_groups, results, staircase, configs, None, only)

    def _collect(self, n_items, index_groups, results, staircase, configs, on_rows, only):
        """Per-group (baseline, steered) back in item order: [items], [items, V, configurations]."""
        n_vectors = staircase.n_vectors
        baseline = torch.empty(n_items, dtype=torch.float32)
        steered = torch.zeros(n_items, n_vectors * len(configs), dtype=torch.float32)
        columns = torch.tensor([v * len(configs) + c for v, c in staircase.active], dtype=torch.long)
        for index, (base_diff, group_steered) in zip(index_groups, results, strict=True):
            rows = torch.tensor(index)
            baseline[rows] = base_diff
            if staircase.active:
                steered[rows[:, None], columns[None, :]] = group_steered
        _fill_uncomputed(steered, baseline, n_vectors, configs, only)
        if on_rows is not None:
            on_rows(n_items * (n_vectors * len(configs) + 1))
        steered_np = steered.numpy().astype(np.float64).reshape(n_items, n_vectors, len(configs))
        return baseline.numpy().astype(np.float64), steered_np

    def _plain_vectors(self, items, vector_sets, configs, on_rows, request_key) -> tuple[np.ndarray, np.ndarray]:
        """``run_vectors`` on the plain engine: one plain run per vector set."""
        n_vectors = vector_sets.shape[0]
        plain = LogitDiffEngine(self.model, self.backend, self.batch_rows, self.positions)
        runs = [
            plain.run(items, vector_sets[v], configs, None, None if request_key is None else f"{request_key}/v{v}")
            for v in range(n_vectors)
        ]
        if on_rows is not None:
            on_rows(len(items) * (n_vectors * len(configs) + 1))
        return runs[0].baseline, np.stack([r.steered for r in runs], axis=1)

    def _fit_block_rows(self, items: Sequence[EncodedItem], index_groups: list[list[int]]) -> int:
        """``batch_rows``, shrunk if a block's transient (per-row prefix K/V copies, attention
        scores, MLP activations; ``memory.py``) would not fit in half the free memory of the
        model's device. Locally only: a remote server sizes its own work."""
        if getattr(self.backend, "is_remote", False) or not index_groups:
            return self.batch_rows
        from remote_steer.engines import memory

        width = max(len(items[i].prompt_ids) for index in index_groups for i in index)
        window = max(len(it.prompt_ids) - it.steer_start(self.positions) for it in items)
        shape = memory.model_shape(self.model)
        available = memory.available_bytes(memory.model_device(self.model))
        self.block_rows_used = memory.fit_block_rows(shape, self.batch_rows, width, window, available)
        return self.block_rows_used

    def _group(self, group: Sequence[EncodedItem]) -> tuple[TokenBatch, int, torch.Tensor, torch.Tensor]:
        """A group's trace inputs: prompts, prefix width, steered columns of the window, answer tokens."""
        batch = left_pad([it.prompt_ids for it in group], self.model.tokenizer.pad_token_id)
        starts = [it.steer_start(self.positions) for it in group]
        window = max(len(it.prompt_ids) - s for it, s in zip(group, starts, strict=True))
        prefix = batch.width - window
        steer = batch.mask_from(starts)[:, prefix:].float()
        tokens = torch.tensor([[it.matching_token, it.other_token] for it in group])
        return batch, prefix, steer, tokens

    def _count(self, batch: TokenBatch, group: Sequence[EncodedItem], configs: Sequence[SteerConfig]) -> None:
        n_layers = self.model.n_layers
        window = max(len(it.prompt_ids) - it.steer_start(self.positions) for it in group)
        _count_prompt(self.stats, batch, n_layers)
        self.stats.steered_token_layers += len(group) * window * sum(n_layers - 1 - c.layer for c in configs)
        self.stats.answer_logit_rows += 2 * len(group) * (len(configs) + 1)


@dataclass(frozen=True)
class _Staircase:
    """The (vector, configuration) pairs one sweep computes, as the kernel takes them."""

    n_vectors: int
    active: list[tuple[int, int]]  # (vector set, configuration); strength 0 and ``only`` False left out
    vectors: torch.Tensor  # one row per (vector set, layer) used: only these rows travel
    rows: list[int]  # per active pair, its row of ``vectors``
    layers: list[int]
    strengths: list[float]

    @classmethod
    def of(cls, vector_sets, configs: Sequence[SteerConfig], n_layers: int, only) -> _Staircase:
        for config in configs:
            if not 0 <= config.layer < n_layers:
                raise ValueError(f"steering layer {config.layer} outside the model's {n_layers} layers")
        n_vectors = vector_sets.shape[0]
        # strength 0 adds nothing: those columns are the baseline
        active = [
            (v, c)
            for v in range(n_vectors)
            for c, config in enumerate(configs)
            if config.strength != 0.0 and (only is None or only[v][c])
        ]
        pairs = sorted({(v, configs[c].layer) for v, c in active})
        row_of = {pair: j for j, pair in enumerate(pairs)}
        vectors = torch.stack([vector_sets[v, layer] for v, layer in pairs]) if pairs else vector_sets[0, :1]
        return cls(
            n_vectors,
            active,
            vectors,
            [row_of[(v, configs[c].layer)] for v, c in active],
            [configs[c].layer for _, c in active],
            [float(configs[c].strength) for _, c in active],
        )


@dataclass
class _Layer:
    keys: torch.Tensor
    values: torch.Tensor


@dataclass
class HeldGroup:
    """One group's prompt pass, kept: what ``fast_kernel.sweep`` reads of it. Looks like
    the pass's cache to the kernel (``layers[l].keys``/``.values``, prefix columns only).
    Layers no held configuration can reach hold zero-stride stand-ins (no memory)."""

    item_ids: list[str]
    prefix: int
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    steer: torch.Tensor
    tokens: torch.Tensor
    resid: list[torch.Tensor]  # per layer [G, window, hidden]
    layers: list[_Layer]  # per layer prefix keys/values [G, heads, prefix, dim]

    @property
    def window(self) -> int:
        return self.resid[0].shape[1]

    def select(self, rows: torch.Tensor) -> HeldGroup:
        """The group's rows ``rows`` only."""

        def take(t):
            return t.index_select(0, rows.to(t.device))

        return HeldGroup(
            [self.item_ids[r] for r in rows.tolist()],
            self.prefix,
            take(self.position_ids),
            take(self.attention_mask),
            take(self.steer),
            take(self.tokens),
            [take(r) for r in self.resid],
            [_Layer(take(layer.keys), take(layer.values)) for layer in self.layers],
        )


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    """A compact CPU copy (a view would keep the whole layer output or cache alive)."""
    return torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu").copy_(tensor)


def _stand_in(tensor: torch.Tensor) -> torch.Tensor:
    """Zeros of ``tensor``'s shape and dtype that take no memory (a layer never read)."""
    return torch.zeros((), dtype=tensor.dtype, device="cpu").expand(tensor.shape)


@dataclass
class HeldPrompts:
    """Prompt passes a sweep kept, so that a later pass over the same items (the
    side-effects matrix, ``run/side_effects.py``) computes only its steered rows.

    Kept on the CPU, and only what a configuration at one of ``layers`` reads: the window
    residual at those layers (and the first and last, which size the masks and give the
    baseline) and the prefix keys/values above the lowest of them (``held_bytes``)."""

    layers: frozenset[int]
    groups: list[HeldGroup] = field(default_factory=list)
    index: dict[str, tuple[int, int]] = field(default_factory=dict)  # item id -> (group, row)

    def keep(self, item_ids, group, resid, kv) -> None:
        """One group's pass (``_group``'s inputs, the layer outputs' window, the prefix cache)."""
        batch, prefix, steer, tokens = group
        _, position_ids, attention_mask = trace_inputs(batch)
        low, last = min(self.layers), len(resid) - 1
        window = [_copy(r) if i in self.layers | {0, last} else _stand_in(r) for i, r in enumerate(resid)]
        keys, values = kv
        cached = [
            _Layer(_copy(k), _copy(v)) if i == 0 or i > low else _Layer(_stand_in(k), _stand_in(v))
            for i, (k, v) in enumerate(zip(keys, values, strict=True))
        ]
        g = len(self.groups)
        self.groups.append(
            HeldGroup(list(item_ids), prefix, position_ids, attention_mask, steer, tokens, window, cached)
        )
        for row, item_id in enumerate(item_ids):
            self.index.setdefault(item_id, (g, row))

    def holds(self, items: Sequence[EncodedItem]) -> bool:
        return all(it.item_id in self.index for it in items)

    def find(self, item_id: str) -> tuple[int, int]:
        return self.index[item_id]

    @property
    def nbytes(self) -> int:
        """Memory held (stand-ins take none)."""
        total = 0
        for group in self.groups:
            for t in [*group.resid, *(x for layer in group.layers for x in (layer.keys, layer.values))]:
                if t.stride() and t.stride()[0] != 0:
                    total += t.numel() * t.element_size()
        return total


def _fill_uncomputed(steered, baseline, n_vectors: int, configs: Sequence[SteerConfig], only) -> None:
    """Columns the trace skipped: NaN where ``only`` says so, the baseline at strength 0."""
    for v in range(n_vectors):
        for c, config in enumerate(configs):
            if only is not None and not only[v][c]:
                steered[:, v * len(configs) + c] = float("nan")
            elif config.strength == 0.0:
                steered[:, v * len(configs) + c] = baseline


class ExtractOptions(TypedDict, total=False):
    """The keyword options every fast extraction takes (``extract_caa``'s, plus weights)."""

    concept: Required[str]
    batch_size: Required[int]
    backend: Required[Backend]
    on_batch: Callable[[int], None] | None
    request_key: str | None
    stats: WorkStats | None
    positions: SteerPositions
    weights: torch.Tensor | None


def extract_caa_fast(
    model: LoadedModel, items: Sequence[EncodedItem], **options: Unpack[ExtractOptions]
) -> SteeringVectors:
    """``extract_caa`` with each prompt run once (same signature, same vectors).

    Per group (one trace): the prompts once through every layer with a key/value
    cache, then the positive and negative answer tokens as two one-token rows per
    item against that cache, reading the decoder-layer output at every layer. All
    groups go in one request and are summed on the model's side. The prompt pass
    also gives the mean residual norm at the steered positions (``positions``).
    """
    return extract_caa_fast_readout(model, items, **options)[0]


def extract_caa_fast_weighted(
    model: LoadedModel, items: Sequence[EncodedItem], **options: Unpack[ExtractOptions]
) -> tuple[SteeringVectors, torch.Tensor]:
    """``extract_caa_fast`` plus V extra vectors Σ_i weights[v, i] · d_i / items (d_i: item
    i's positive − negative activation), e.g. bootstrap resamples (counts) or shuffled
    labels (±1). A [V, rows] weight matrix multiplies the activations inside the trace,
    so only (1 + V) × layers × hidden leaves the model. Returns (vectors, [V, layers, hidden])."""
    vectors, extra, _ = extract_caa_fast_readout(model, items, **options)
    return vectors, extra


@dataclass(frozen=True)
class Readout:
    """Per-item readouts of the extraction pass, in item order (decodability by depth).

    ``positive``/``negative`` [items, layers, k]: the answer-token residual after every
    layer with the matching / other answer appended, projected onto the request's basis
    (k = hidden without one); ``lens`` [items, layers]: the logit lens at the position
    that predicts the answer letter, logit(matching) − logit(other) from each layer."""

    positive: torch.Tensor
    negative: torch.Tensor
    lens: torch.Tensor


def extract_caa_fast_readout(  # noqa: PLR0913 - keyword options, called so by the stages and ~40 tests
    model: LoadedModel,
    items: Sequence[EncodedItem],
    *,
    concept: str,
    batch_size: int,
    backend: Backend,
    on_batch: Callable[[int], None] | None = None,
    request_key: str | None = None,
    stats: WorkStats | None = None,
    positions: SteerPositions = "assistant",
    weights: torch.Tensor | None = None,
    basis: torch.Tensor | None = None,
) -> tuple[SteeringVectors, torch.Tensor, Readout | None]:
    """``extract_caa_fast_weighted`` and, with ``basis`` ([hidden, k], or an empty tensor
    for the whole residual), the per-item ``Readout`` from the same pass: the answer rows'
    residuals are projected inside the trace and the logit lens reads the prompt pass's
    last position, so rows × layers × k + items × layers floats leave the model. Models
    off the fast path give no readout (None)."""
    if not supports_fast_path(model):
        vectors, extra = extract_caa_weighted(
            model,
            items,
            concept=concept,
            batch_size=batch_size,
            backend=backend,
            on_batch=on_batch,
            request_key=request_key,
            positions=positions,
            weights=weights,
        )
        return vectors, extra, None
    stats = stats if stats is not None else WorkStats()
    n_layers = model.n_layers
    all_weights = item_weights(weights, len(items))
    groups = []
    count = 0.0
    index_groups = _groups(items, batch_size)
    for index in index_groups:
        group = [items[i] for i in index]
        g = len(group)
        batch = left_pad([it.prompt_ids for it in group], model.tokenizer.pad_token_id)
        answer_ids = torch.tensor([[it.matching_token] for it in group] + [[it.other_token] for it in group])
        rows = torch.arange(g).repeat(2)
        position_ids = (batch.position_ids[:, -1:] + 1).index_select(0, rows)
        ones = torch.ones(g, 1, dtype=batch.attention_mask.dtype)
        attention_mask = torch.cat([batch.attention_mask, ones], dim=1).index_select(0, rows)
        w = all_weights[:, index]
        signed = torch.cat([w, -w], dim=1)  # +positive, -negative
        mask = batch.mask_from([it.steer_start(positions) for it in group])
        count += float(mask.sum())
        tokens = torch.tensor([[it.matching_token, it.other_token] for it in group])
        groups.append(
            (
                batch.model_inputs(),
                answer_ids,
                rows,
                position_ids,
                attention_mask,
                signed,
                mask,
                tokens,
                prompt_pass_kwargs(model),
            )
        )
        _count_prompt(stats, batch, n_layers)
        stats.answer_token_layers += 2 * g * n_layers
    # the only names the session body uses, with the kernel
    nn, layers, no_logits, layout = model.nn, model.layers, _NO_LOGITS, model.kernel_layout()
    lm_head, cap, reading = model.nn.lm_head, layout["softcap"] if layout else None, basis is not None
    request = backend.open(model, "extraction", request_key)
    total = norms = reads = None
    # fmt: off
    with torch.inference_mode():
        if request.must_submit:
            with nn.session(**request.session_kwargs()):
                batch_sums = []
                norm_sums = []
                reads = []
                for inputs, answer_ids, rows, position_ids, attention_mask, signed, mask, tokens, kwargs in groups:
                    with nn.trace(inputs, use_cache=True, logits_to_keep=no_logits, **kwargs):
                        outputs = [layers[i].output for i in range(len(layers))]
                        layer_norms = [fast_kernel.masked_norm(out, mask) for out in outputs]
                        last = [out[:, -1].clone() for out in outputs] if reading else []
                        norm_sums.append(torch.stack(layer_norms))
                        cache = fast_kernel.output_cache(nn.output)
                        got = fast_kernel.answer_activations(nn.model, cache, answer_ids, rows, position_ids,
                                                             attention_mask, signed, layout, basis)
                        if reading:
                            reads.append((got[1], fast_kernel.lens(nn.model, lm_head, last, tokens, cap)))
                            got = got[0]
                        batch_sums.append(got)
                total = nnsight.save(torch.stack(batch_sums).sum(0))
                norms = nnsight.save(torch.stack(norm_sums).sum(0))
                reads = nnsight.save(reads)
        got = request.result(total=total, norms=norms, reads=reads)
        total, norms, reads = got["total"], got["norms"], got["reads"]
    # fmt: on
    if on_batch is not None:
        on_batch(len(items))
    total = total / len(items)  # [layers, V, hidden]
    vectors = SteeringVectors(
        total[:, 0].contiguous(), len(items), model.name, model.revision, concept, norms / max(count, 1.0), positions
    )
    readout = _readout(index_groups, reads, len(items)) if reading else None
    return vectors, total[:, 1:].transpose(0, 1).contiguous(), readout


def _readout(index_groups: list[list[int]], reads: list, n_items: int) -> Readout:
    """Per-group readouts (rows: the group's positives, then its negatives) back in item order."""
    order = torch.tensor([i for index in index_groups for i in index])
    positive = torch.cat([r[: len(index)] for index, (r, _) in zip(index_groups, reads, strict=True)])
    negative = torch.cat([r[len(index) :] for index, (r, _) in zip(index_groups, reads, strict=True)])
    lens = torch.cat([lens for _, lens in reads])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n_items)
    return Readout(positive[inverse].float(), negative[inverse].float(), lens[inverse].float())
