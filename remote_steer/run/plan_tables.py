"""What ``remote-steer plan`` shows, assembled: the cost per model, the controls' cost,
peak memory and the generation cost, in the order they are shown. The command only
draws them; the spec is read once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from remote_steer.analysis.controls import floor_sentence
from remote_steer.run import strength_check
from remote_steer.run.memory_plan import memory_rows
from remote_steer.run.plan import ModelPlan, plan_experiment
from remote_steer.run.plan_generation import plan_generation
from remote_steer.run.spec import ExperimentSpec


@dataclass(frozen=True)
class PlanTable:
    title: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    caption: str


def size(n: float | None) -> str:
    """Bytes, in the largest unit under 1000 ("?" unknown)."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def count(n: int | None) -> str:
    """A count, in thousands or millions once large ("?" unknown)."""
    if n is None:
        return "?"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else str(n)


def plan_parts(spec: ExperimentSpec, title: str, check_hosts: bool = False) -> list[PlanTable | str]:
    """Tables and notes (strings), in the order ``plan`` shows them."""
    plans, estimated = plan_experiment(spec, check_hosts=check_hosts)
    parts: list[PlanTable | str] = [cost_table(spec, plans, estimated, title)]
    parts += list(dict.fromkeys(p.host_note for p in plans if p.host_note))  # --check-hosts: not served, cold
    parts += controls_notes(spec, plans)
    parts += depth_notes(spec, plans)
    parts.append(strength_check.plan_note(spec))
    parts.append(memory_table(spec))
    generation = generation_table(spec)
    if generation is not None:
        parts.append(generation)
    return parts


def cost_table(spec: ExperimentSpec, plans: list[ModelPlan], estimated: bool, title: str) -> PlanTable:
    rows = [
        (
            p.model,
            p.training,
            p.backend,
            p.engine,
            p.host,
            p.hosted,
            p.layers or "?",
            p.sweep_layers or "?",
            p.items,
            p.requests if p.requests is not None else "?",
            p.forward_passes if p.forward_passes is not None else "?",
            size(p.bytes_sent),
            size(p.bytes_received),
        )
        for p in plans
    ]
    caption = f"items: train+test over {len(spec.data.concepts)} concepts"
    if estimated:
        caption += "; data not readable here, counts estimated from max_items"
    columns = ["model", "training", "backend", "engine", "host", "hosted", "layers", "sweep", "items"]
    columns += ["requests", "forward passes", "sent ≈", "received ≈"]
    return PlanTable(f"Plan for {title}", columns, rows, caption)


def controls_notes(spec: ExperimentSpec, plans: list[ModelPlan]) -> list[str]:
    """What the [controls] cost, and what they can show."""
    controls = spec.controls
    if not controls.any or "logit" not in spec.evaluation.modes:
        return []
    kinds = ", ".join(f"{n} {k}" for k, n in vars(controls).items() if n)
    notes = [
        f"Controls ({p.model}): {kinds} vectors at every configuration add {p.control_rows:,} steered rows "
        f"to the sweep's {p.sweep_rows:,} ({p.control_rows / p.sweep_rows:.1f}× its rows)."
        for p in plans
        if p.sweep_rows and p.control_rows is not None
    ]
    if controls.random + controls.shuffled:
        notes.append(floor_sentence(controls.random + controls.shuffled))
    return notes


def memory_table(spec: ExperimentSpec) -> PlanTable:
    """Peak memory per model and device."""

    def gb(v: float | None) -> str:
        return "?" if v is None else f"{v:.2f}"

    rows = [
        (
            m["model"],
            m["device"],
            m["dtype"],
            gb(m["weights_gb"]),
            gb(m["group_gb"]),
            gb(m["block_gb"]),
            gb(m["total_gb"]),
            gb(m["free_gb"]),
            m["fits"],
        )
        for m in memory_rows(spec)
    ]
    return PlanTable(
        "Peak memory (fast engine, ~160-token prompts)",
        ["model", "device", "dtype", "weights", "group", "block", "peak", "free", "fits"],
        rows,
        "Sizes in GB. group: prompt K/V cache + window residuals; block: one staircase block's transient "
        "(per-row prefix K/V copies, attention, MLP); free: on the device now ('?' without it); "
        "'smaller blocks': the engine shrinks them to fit",
    )


def generation_table(spec: ExperimentSpec) -> PlanTable | None:
    """The generation part: its own table, upper bounds (None without generation)."""
    plans = plan_generation(spec)
    if not plans:
        return None
    rows = [
        (
            p.model,
            p.concepts,
            count(p.configs),
            count(p.rows),
            count(p.tokens),
            count(p.passes),
            count(p.requests),
            size(p.bytes_sent),
            size(p.bytes_received),
        )
        for p in plans
    ]
    return PlanTable(
        "Generation cost (upper bounds)",
        ["model", "concepts", "configs", "rows", "tokens", "passes", "requests", "sent", "received"],
        rows,
        f"every row counted at max_new_tokens = {spec.generation.max_new_tokens}; "
        "rows = test items × (configs + baseline); rows that end their turn or decide their answer stop sooner",
    )


def side_effects_note(p: ModelPlan) -> str:
    """What the side-effects matrix (run/side_effects.py) adds to the sweep, and how."""
    assert p.side_effect_rows is not None and p.sweep_rows
    rows = (
        f"{p.side_effect_rows:,} steered rows beyond the sweep's {p.sweep_rows:,} "
        f"({p.side_effect_rows / p.sweep_rows:.2f}× its rows)"
    )
    if not p.side_effects_on:
        return (
            f"Side effects ({p.model}, off: [evaluation] side_effects = true, or scripts/side_effects.py on the "
            f"finished run): {rows}."
        )
    if p.side_effect_kept is not None:
        return (
            f"Side effects ({p.model}, on): {rows}; the sweep keeps its prompt passes for them "
            f"(about {size(p.side_effect_kept)} of memory), so no prompt runs twice."
        )
    return (
        f"Side effects ({p.model}, on): {rows}, plus one more prompt pass per held-out item "
        "(the server keeps nothing between requests)."
    )


def depth_notes(spec: ExperimentSpec, plans: list[ModelPlan]) -> list[str]:
    """What decodability by depth brings back (docs/depth.md), and at the 32B shape."""
    from remote_steer.analysis.decodability import REMOTE_DIMS, readout_bytes

    notes = []
    concepts = max(1, len(spec.data.concepts))
    for p in plans:
        if p.depth_dims is None or p.depth_bytes is None:
            continue
        where = "comes back" if p.backend == "remote" else "stays local"
        notes.append(
            f"Decodability ({p.model}): {p.depth_dims} readout dims per layer, {size(p.depth_bytes / concepts)} "
            f"per concept ({where}); no extra forward pass."
        )
        if p.side_effect_rows and p.sweep_rows:
            notes.append(side_effects_note(p))
        if p.methods_rows and p.sweep_rows:
            notes.append(
                f"Methods ({p.model}, on): {p.methods_rows:,} steered rows ({p.methods_rows / p.sweep_rows:.2f}× the "
                "sweep's), from the extraction's readout and the sweep's kept prompt passes."
            )
        if p.window_layers is not None and p.sweep_layers:
            notes.append(
                f'Predicted layer window ({p.model}, layer_window = "predicted"): at most {p.window_layers} of '
                f"{p.sweep_layers} sweep layers per concept, at least {1 - p.window_layers / p.sweep_layers:.0%} "
                "of the sweep's configurations saved; which layers is known only after each concept's "
                "extraction (the run names them)."
            )
    per_item = readout_bytes(1, 64, REMOTE_DIMS)
    notes.append(
        f"Decodability on NDIF at the 32B shape (64 layers × 5,120; {REMOTE_DIMS} random dims): "
        f"{size(per_item)} per training item, {size(150 * per_item)} per concept of 150 training items."
    )
    return notes
