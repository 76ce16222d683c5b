"""What a spec will cost before it runs: requests, forward passes and bytes, per model.

Runs offline: model shapes come from the registry (or a cached config), item counts
from the data when it can be read (else ``max_items``, marked as an estimate), and
the host is asked whether it hosts each remote model only with ``check_hosts``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from remote_steer.run.spec import ExperimentSpec

# Sizes of what travels, for estimates (uncompressed; nnsight compresses with zstd).
_TRACE_CODE_BYTES = 20_000  # serialized trace body and envelope, per request
_BYTES_PER_TOKEN = 8 * 3 + 1  # input ids, attention mask, position ids (int64) + steering mask (bool)
_ASSUMED_PROMPT_TOKENS = 90  # Qwen3 chat prompt of a median model-written-evals question
_ASSUMED_ITEMS = 300


@dataclass(frozen=True)
class ModelPlan:
    model: str
    backend: str
    engine: str
    host: str
    hosted: str
    layers: int | None
    sweep_layers: int | None
    items: str
    requests: int | None
    forward_passes: int | None
    bytes_sent: int | None
    bytes_received: int | None
    sweep_rows: int | None = None  # item × configuration rows of the sweep, baseline rows included
    control_rows: int | None = None  # steered rows the [controls] vectors add (K × the sweep's steered rows)
    training: str = "—"  # the registry card's post-training label ("rl", "distilled", ...)
    host_note: str = ""  # --check-hosts: one line when the model is not served, or cold
    depth_dims: int | None = None  # decodability readout dimensions per layer (analysis/decodability.py)
    depth_bytes: int | None = None  # bytes the readouts bring back, every concept (received includes them)
    side_effect_rows: int | None = None  # steered rows the side-effects matrix adds (run/side_effects.py)
    side_effects_on: bool = False  # [evaluation] side_effects: the run computes the matrix
    side_effect_kept: int | None = None  # bytes of the sweep's prompt passes kept for it (local fast path)
    methods_rows: int | None = None  # [evaluation] methods: steered rows of the four methods (run/methods_stage.py)
    window_layers: int | None = None  # layer_window = "predicted": the most sweep layers a window keeps


def _items_per_concept(spec: ExperimentSpec) -> tuple[dict[str, tuple[int, int]], bool, int]:
    """concept -> (train, test) counts; whether they are estimates; median prompt tokens."""
    from remote_steer.errors import RemoteSteerError

    counts, lengths, estimated = {}, [], False
    for concept in spec.data.concepts:
        try:
            from remote_steer.data.loading import load_concept
            from remote_steer.data.preprocess import preprocess

            split = preprocess(
                load_concept(concept, spec.data.source, spec.data.files),
                concept,
                seed=spec.seed,
                test_fraction=spec.data.test_fraction,
                max_items=spec.data.max_items,
            )
            counts[concept] = (len(split.train), len(split.test))
            lengths += [len(item.user_prompt()) // 4 + 20 for item in split.test]  # ~4 chars a token + chat header
        except RemoteSteerError:
            n = spec.data.max_items or _ASSUMED_ITEMS
            test = round(n * spec.data.test_fraction)
            counts[concept] = (n - test, test)
            estimated = True
    median = sorted(lengths)[len(lengths) // 2] if lengths else _ASSUMED_PROMPT_TOKENS
    return counts, estimated, median


def _shape(name: str, revision: str | None) -> tuple[int | None, int | None]:
    from remote_steer.errors import RemoteSteerError
    from remote_steer.models.registry import lookup

    card = lookup(name)
    if card is not None:
        return card.n_layers, card.hidden_size
    try:
        from remote_steer.models.loading import load_config, resolve

        config = load_config(resolve(name, revision))
        config = getattr(config, "text_config", config)
        return int(config.num_hidden_layers), int(config.hidden_size)
    except RemoteSteerError:
        return None, None


def _hosted(backend, remote_name: str, model_name: str, params_b: float | None) -> tuple[str, str]:
    """The host's word on the model (its open /status, read once) and a line to print when
    it is not served (the closest served names) or cold (the first request deploys it)."""
    from remote_steer.errors import RemoteSteerError
    from remote_steer.remote.status import cold_line, not_served_line, server_models

    try:
        models = server_models(backend.host, timeout_s=3.0)
    except RemoteSteerError as error:
        return f"unknown ({type(error).__name__})", str(error)
    found = models.get(remote_name)
    if found is None:
        return "no", not_served_line(backend.host, remote_name, model_name, models)
    if found.cold:
        return "cold", cold_line(model_name, backend.host, params_b)
    return ("yes" if found.hosted else found.state.lower()), ""


def plan_experiment(spec: ExperimentSpec, check_hosts: bool = False) -> tuple[list[ModelPlan], bool]:
    from remote_steer.models.registry import lookup
    from remote_steer.remote.backend import Backend
    from remote_steer.run.spec import validate

    validate(spec)  # the same checks as `run`, before anything is counted
    counts, estimated, prompt_tokens = _items_per_concept(spec)
    ev = spec.evaluation
    plans = []
    for model in spec.models:
        backend = Backend(model.backend, host=model.host)
        layers, hidden = _shape(model.name, model.revision)
        card = lookup(model.name)
        remote_name = card.name if card is not None and card.toy else (card.hub_id if card else model.name)
        hosted, host_note = ("—" if not backend.is_remote else "unchecked"), ""
        if backend.is_remote and check_hosts:
            params = card.params_total_b if card is not None else None
            hosted, host_note = _hosted(backend, remote_name, model.name, params)
        if layers is None or hidden is None:
            plans.append(
                ModelPlan(
                    model.name,
                    backend.kind,
                    model.engine,
                    backend.host or "—",
                    hosted,
                    None,
                    None,
                    "?",
                    None,
                    None,
                    None,
                    None,
                    training=card.training if card is not None else "—",
                    host_note=host_note,
                )
            )
            continue
        sweep = len(spec.sweep_layers(layers, model))
        strengths = spec.strengths_for(model)
        n_configs = sweep * len(strengths)
        sweeping = "logit" in ev.modes
        n_controls = spec.controls.random + spec.controls.shuffled + spec.controls.bootstrap if sweeping else 0
        # the letter control (run/letter_control.py): real models only, at the strongest ± strength
        letter_configs = sweep * len(_strongest_pair(strengths)) if sweeping and not _is_toy(card) else 0
        # the fast engine's sweep requests carry the controls and the letter direction too
        # (run/rigour.py, JointPass); the letter direction is a weight row of the extraction
        joint = model.engine == "fast" and bool(n_controls or letter_configs)
        requests = passes = sent = received = sweep_rows = control_rows = 0
        depth_dims, depth_bytes = _depth_readout(model.engine, backend.is_remote, counts, layers, hidden)
        received += depth_bytes if backend.is_remote else 0
        for train, test in counts.values():
            if sweeping:
                sweep_rows += test * (n_configs + 1)
                control_rows += test * n_configs * n_controls
            width = prompt_tokens + 1
            extractions = 2 if letter_configs and not joint else 1  # the vector's, and the letter control's
            extracted = 1 + spec.controls.shuffled + spec.controls.bootstrap + (1 if letter_configs and joint else 0)
            requests += extractions
            passes += extractions * math.ceil(train / spec.extraction.batch_size)
            sent += extractions * (_TRACE_CODE_BYTES + 2 * train * width * _BYTES_PER_TOKEN)
            received += extractions * layers * hidden * 4 * extracted
            if not sweeping:
                continue
            fits = ev.request_token_budget // (prompt_tokens * (n_configs + 1))
            chunk = max(1, min(ev.chunk_items, fits))
            passes_of = (
                [(1 + n_controls, letter_configs)] if joint else [(1, 0)] + ([(n_controls, 0)] if n_controls else [])
            )
            for vectors, extra_rows in passes_of:
                for first in range(0, test, chunk):
                    items = min(chunk, test - first)
                    rows = items * (n_configs * vectors + extra_rows + (1 if vectors == 1 or joint else 0))
                    requests += 1
                    passes += math.ceil(rows / ev.batch_size)
                    prompts = items * math.ceil(rows / ev.batch_size)  # each prompt once per batch
                    sent += (
                        _TRACE_CODE_BYTES
                        + prompts * prompt_tokens * _BYTES_PER_TOKEN
                        + rows * 24
                        + (vectors + (1 if extra_rows else 0)) * sweep * hidden * 4
                    )
                    received += rows * 4 + 1_000
            if letter_configs and not joint:
                rows = test * (letter_configs + 1)
                requests += 1
                passes += math.ceil(rows / ev.batch_size)
                sent += _TRACE_CODE_BYTES + test * prompt_tokens * _BYTES_PER_TOKEN + rows * 24 + sweep * hidden * 4
                received += rows * 4 + 1_000
        n_items = f"{sum(tr for tr, _ in counts.values())}+{sum(te for _, te in counts.values())}"
        plans.append(
            ModelPlan(
                model.name,
                backend.kind,
                model.engine,
                backend.host or "—",
                hosted,
                layers,
                sweep,
                n_items + (" (est.)" if estimated else ""),
                requests,
                passes,
                sent,
                received,
                sweep_rows,
                control_rows,
                card.training if card is not None else "—",
                host_note,
                depth_dims,
                depth_bytes,
                (len(counts) - 1) * sum(te for _, te in counts.values()) if sweeping else None,
                window_layers=_window_layers(spec, model, layers),
                side_effects_on=sweeping and ev.side_effects and len(counts) > 1,
                side_effect_kept=_kept_bytes(spec, model, card, counts, prompt_tokens),
                methods_rows=_methods_rows(spec, model, sweep, counts),
            )
        )
    return plans, estimated


def _methods_rows(spec: ExperimentSpec, model, sweep: int, counts) -> int | None:
    """With ``[evaluation] methods``: the four methods at every sweep layer and strength
    (local fast-path models only)."""
    from remote_steer.analysis.directions import METHODS
    from remote_steer.run.methods_stage import STRENGTHS

    ev = spec.evaluation
    if not ev.methods or "logit" not in ev.modes or model.backend != "local" or model.engine != "fast":
        return None
    return len(METHODS) * sweep * len(STRENGTHS) * sum(te for _, te in counts.values())


def _kept_bytes(spec: ExperimentSpec, model, card, counts, prompt_tokens: int) -> int | None:
    """About what the sweep's prompt passes kept for the side-effects matrix take (local fast
    path; the card's shape, head size taken as hidden / heads, assistant turn ~8 tokens)."""
    from remote_steer.engines import memory

    ev = spec.evaluation
    if (
        not ev.side_effects
        or model.backend != "local"
        or model.engine != "fast"
        or card is None
        or "logit" not in ev.modes
    ):
        return None
    head_dim = card.hidden_size // card.n_heads
    shape = memory.Shape(
        card.n_layers, card.hidden_size, card.n_heads, card.n_kv_heads, head_dim, 0, 0, 0.0,
        memory._DTYPE_BYTES.get(model.dtype, 2),
    )  # fmt: skip
    prefix, window = (0, prompt_tokens) if ev.positions == "all" else (prompt_tokens, 8)
    items = sum(te for _, te in counts.values())
    return memory.held_bytes(shape, items, prefix, window, spec.sweep_layers(card.n_layers, model))


def _window_layers(spec: ExperimentSpec, model, layers: int) -> int | None:
    """With ``layer_window = "predicted"``: the most sweep layers the window keeps
    (run/predicted_window.py); which ones, only each concept's extraction says."""
    from remote_steer.run.predicted_window import PREDICTED, most_kept

    if spec.evaluation.layer_window != PREDICTED:
        return None
    return most_kept(spec.sweep_layers(layers, model), layers)


def _depth_readout(engine: str, remote: bool, counts, layers: int, hidden: int) -> tuple[int | None, int]:
    """Decodability by depth rides on the fast extraction pass: its readout dimensions
    per layer (the whole residual locally, a seeded random subspace remotely) and the
    bytes it brings back over every concept."""
    from remote_steer.analysis.decodability import REMOTE_DIMS, readout_bytes

    if engine != "fast":
        return None, 0
    dims = min(hidden, REMOTE_DIMS) if remote else hidden
    return dims, sum(readout_bytes(train, layers, dims) for train, _ in counts.values())


def _is_toy(card) -> bool:
    """Toys skip the letter control; every other model (registry, hub, local path) gets it."""
    return card is not None and bool(card.toy)


def _strongest_pair(strengths) -> list[float]:
    from remote_steer.run.letter_control import control_strengths

    return control_strengths(strengths)
