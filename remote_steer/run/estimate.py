"""How long a run will take, said when it starts and refined as it goes (issue 18).

The work is counted in floating-point operations of the model's dense layers, stage by
stage, as the engines do it: a prompt pass over every item (extraction on the training
items, the sweep on the held-out ones), then the steered rows, each running the few
window tokens from the assistant turn through the layers above its own, for the real
vector, every control vector and, on real models, the letter control's direction at the
strongest ± strength. With ``layer_window = "predicted"`` the steered rows are counted
for the window that costs most (which one runs, only each concept's extraction says);
with ``ablation = true``, one more step per local model after every concept's: three
full passes over each concept's held-out items (unablated, the concept's direction and
a random one projected out). Seconds = work / a rate (``CPU_GFLOPS``) plus ``STEP_SECONDS`` per
model × concept before anything ran; after each model × concept, the run's own pace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Effective rate of this project's engines, float32 on 2 idle CPU cores: the reference
# box the README's times are for, calibrated on two runs from a fresh clone on an idle
# 2-core box (load < 2, Intel Xeon, 2026-12-02): real-small.toml (SmolLM2-135M, six
# concepts, 14,526 GFLOP) `done in 103.5s` with the model built, and the quickstart (two
# toys × two concepts, 44 GFLOP) `done in 7.3s`. Solving the two for a rate and a fixed
# cost per step gives ~160 GFLOP/s and ~1.8 s; the estimates are then 103 s and 8 s.
# Recalibrate the same way from idle runs of both specs.
CPU_GFLOPS = 160.0
STEP_SECONDS = 2.0  # per model × concept: tracing, Python per layer, writing parts (what dominates on toys)
_WINDOW_TOKENS = 5  # "<|im_start|>assistant\n(" and its neighbours: the steered window of a prompt
ABLATION_STEP = "directional ablation"
_ABLATION_PASSES = 3  # engines/ablation.py: unablated, the concept's direction, a random direction


@dataclass(frozen=True)
class Work:
    step: str  # "model · concept"
    gflop: float


def _per_token_layer(config: Any) -> float:
    """GFLOP for one token through one decoder layer (projections and MLP, 2 per MAC)."""
    config = getattr(config, "text_config", config)
    hidden = int(config.hidden_size)
    heads = int(getattr(config, "num_attention_heads", 1))
    head_dim = int(getattr(config, "head_dim", None) or hidden // max(1, heads))
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    experts = getattr(config, "num_experts_per_tok", None)
    moe = getattr(config, "moe_intermediate_size", None)
    if experts and moe:
        mlp = 3 * hidden * int(moe) * int(experts)
    else:
        mlp = 3 * hidden * int(getattr(config, "intermediate_size", 4 * hidden))
    return 2 * (attention + mlp) / 1e9


def _layers_above(spec: Any, model: Any) -> int:
    """Decoder layers a steered row runs, summed over the sweep layers (a row at layer l
    runs the n − 1 − l above it); with ``layer_window = "predicted"``, the most any
    window around a predicted layer sums to (the fast engine's: the plain engine records
    no decodability and sweeps every layer)."""
    from remote_steer.run.predicted_window import PREDICTED, possible_windows

    n, layers = model.n_layers, list(model.sweep_layers)
    windowed = spec.evaluation.layer_window == PREDICTED and model.spec.engine == "fast" and layers
    windows = possible_windows(layers, n) if windowed else [layers]
    return max(sum(n - 1 - layer for layer in w) for w in windows)


def plan_work(plan: Any) -> list[Work]:
    """GFLOP per model × concept of a prepared run (``run.context.Plan``), in run order,
    then, with ``evaluation.ablation``, one ablation step per local model."""
    from remote_steer.models.loading import load_config
    from remote_steer.run.letter_control import control_strengths

    spec = plan.spec
    controls = spec.controls.random + spec.controls.shuffled + spec.controls.bootstrap
    out, ablation = [], []
    for model in plan.models:
        per = _per_token_layer(load_config(model.source))
        n = model.n_layers
        strengths = spec.strengths_for(model.spec)
        pair = control_strengths(strengths) if not model.source.is_toy else []
        above = _layers_above(spec, model)
        for concept, (train, test) in model.encoded.items():
            tokens = sum(len(it.prompt_ids) for it in train)
            work = tokens * n + 2 * len(train) * n  # extraction: prompt pass and the two answer tokens
            if "logit" in spec.evaluation.modes:
                work += sum(len(it.prompt_ids) for it in test) * n  # the sweep's prompt pass
                steered = len(strengths) * above * (1 + controls) + len(pair) * above
                if spec.evaluation.side_effects:  # every other concept's vector, at a layer of the sweep
                    steered += (len(model.encoded) - 1) * above / max(1, len(model.sweep_layers))
                if spec.evaluation.methods and model.spec.backend == "local":  # run/methods_stage.py
                    from remote_steer.analysis.directions import METHODS
                    from remote_steer.run.methods_stage import STRENGTHS

                    every = sum(n - 1 - layer for layer in model.sweep_layers)
                    steered += len(METHODS) * len(STRENGTHS) * every
                work += len(test) * _WINDOW_TOKENS * steered
            if "generation" in spec.evaluation.modes and concept in model.generation_encoded:
                gen = spec.generation
                rows = len(test) * (len(model.generation_layers) * len(gen.strengths or strengths) + 1)
                work += rows * gen.max_new_tokens * n + sum(len(it.prompt_ids) for it in test) * n
            out.append(Work(f"{model.spec.label} · {concept}", work * per))
        if spec.evaluation.ablation and "logit" in spec.evaluation.modes and model.spec.backend == "local":
            tokens = sum(len(it.prompt_ids) for _, test in model.encoded.values() for it in test)
            ablation.append(Work(f"{model.spec.label} · {ABLATION_STEP}", _ABLATION_PASSES * tokens * n * per))
    return out + ablation


def clock(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def seconds_for(gflop: float, steps: int) -> float:
    """The estimate for ``gflop`` of work in ``steps`` model × concept steps."""
    return gflop / CPU_GFLOPS + STEP_SECONDS * steps


def start_note(plan: Any, work: list[Work]) -> str | None:
    """The line a local CPU run prints when it starts (None on GPUs and remote hosts,
    where the reference rate says nothing)."""
    if not work or any(m.spec.backend != "local" or m.spec.device != "cpu" for m in plan.models):
        return None
    total = sum(w.gflop for w in work)
    seconds = seconds_for(total, len(work))
    steps = sum(not w.step.endswith(ABLATION_STEP) for w in work)
    also = " and the directional ablation" if steps < len(work) else ""
    return (
        f"Estimated time: about {clock(seconds)} on 2 idle CPU cores for {steps} model × concept "
        f"step(s){also} ({total:,.0f} GFLOP; less for what is already saved); refined after each step."
    )


def progress_note(work: list[Work], done: int, seconds: float, computed: float) -> str | None:
    """After step ``done`` (1-based): what is left at the pace measured so far; ``computed``
    is the GFLOP actually computed (saved steps excluded) in ``seconds``."""
    left = sum(w.gflop for w in work[done:])
    if done >= len(work) or computed <= 0 or seconds <= 0:
        return None
    return f"{work[done - 1].step}: done; about {clock(left * seconds / computed)} left at this pace"
