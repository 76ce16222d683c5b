"""What a spec's generation will cost: tokens generated, passes, bytes and requests, per model.

Upper bounds: every row is counted as decoding ``max_new_tokens`` (rows that end
their turn or decide their answer earlier stop sooner, so real runs cost less).
Counts follow the fast generation engine: each item's prompt once per group, the
baseline row and every configuration of the item decoded together, one request
per chunk of ``chunk_items`` items, only int32 token ids coming back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from remote_steer.run.spec import ExperimentSpec

_TRACE_CODE_BYTES = 30_000  # serialized session body and the kernel's source, per request
_BYTES_PER_TOKEN = 8 * 3 + 1  # input ids, attention mask, position ids (int64) + steering mask


@dataclass(frozen=True)
class GenerationPlan:
    model: str
    concepts: int
    configs: int | None  # layers × strengths (best_layers: k × strengths)
    rows: int | None  # items × (configurations + 1)
    tokens: int | None  # generated tokens, at most
    passes: int | None  # forward passes: per group, the prompt pass and one per decode step
    requests: int | None
    bytes_sent: int | None
    bytes_received: int | None


def generation_layer_count(spec: ExperimentSpec, n_layers: int) -> int:
    gen = spec.generation
    if gen.best_layers is not None:
        return min(gen.best_layers, len(spec.sweep_layers(n_layers)))
    return len(spec.generation_layers(n_layers))


def plan_generation(spec: ExperimentSpec) -> list[GenerationPlan]:
    """One row per model that generates (none when ``evaluation.modes`` lacks "generation")."""
    from remote_steer.run.plan import _items_per_concept, _shape

    if "generation" not in spec.evaluation.modes:
        return []
    gen, ev = spec.generation, spec.evaluation
    counts, _, prompt_tokens = _items_per_concept(spec)
    strengths = len(gen.strengths or ev.strengths)
    plans = []
    for model in spec.models:
        concepts = [c for c in spec.data.concepts if gen.covers(model.name, c)]
        if not concepts:
            continue
        layers, hidden = _shape(model.name, model.revision)
        if layers is None or hidden is None:
            plans.append(GenerationPlan(model.name, len(concepts), None, None, None, None, None, None, None))
            continue
        configs = generation_layer_count(spec, layers) * strengths
        per_group = max(1, gen.batch_size // (configs + 1))
        rows = tokens = passes = requests = sent = received = 0
        for concept in concepts:
            test = counts[concept][1]
            rows += test * (configs + 1)
            tokens += test * (configs + 1) * gen.max_new_tokens
            for first in range(0, test, ev.chunk_items):
                chunk = min(ev.chunk_items, test - first)
                groups = math.ceil(chunk / per_group)
                requests += 1
                passes += groups * (1 + gen.max_new_tokens)
                sent += _TRACE_CODE_BYTES + chunk * prompt_tokens * _BYTES_PER_TOKEN + configs * hidden * 4
                received += chunk * (configs + 1) * gen.max_new_tokens * 4 + groups * gen.max_new_tokens * 8
        plans.append(GenerationPlan(model.name, len(concepts), configs, rows, tokens, passes, requests, sent, received))
    return plans
