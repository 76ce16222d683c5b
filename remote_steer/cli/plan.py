"""``remote-steer plan``: what a spec will cost, per model; offline-safe."""

from __future__ import annotations

from pathlib import Path

import typer

from remote_steer.cli.app import PlainHelpCommand, app, fail
from remote_steer.errors import RemoteSteerError


def _plan_generation(spec_obj, size) -> None:
    """The generation part of ``plan`` (issue 12): its own table, upper bounds."""
    from remote_steer.display import RichDisplay
    from remote_steer.run.plan_generation import plan_generation

    plans = plan_generation(spec_obj)
    if not plans:
        return

    def count(n: int | None) -> str:
        if n is None:
            return "?"
        return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else str(n)

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
    gen = spec_obj.generation
    RichDisplay().table(
        "Generation cost (upper bounds)",
        ["model", "concepts", "configs", "rows", "tokens", "passes", "requests", "sent", "received"],
        rows,
        f"every row counted at max_new_tokens = {gen.max_new_tokens}; rows = test items × (configs + baseline); "
        "rows that end their turn or decide their answer stop sooner",
    )


def _plan_controls(spec_obj, plans) -> None:
    """What the [controls] cost, and what they can show (issue 18)."""
    from remote_steer.analysis.controls import floor_sentence

    controls = spec_obj.controls
    if not controls.any or "logit" not in spec_obj.evaluation.modes:
        return
    from remote_steer.display import RichDisplay

    display = RichDisplay()
    kinds = ", ".join(f"{n} {k}" for k, n in vars(controls).items() if n)
    for p in plans:
        if not p.sweep_rows or p.control_rows is None:
            continue
        display.note(
            f"Controls ({p.model}): {kinds} vectors at every configuration add {p.control_rows:,} steered rows "
            f"to the sweep's {p.sweep_rows:,} ({p.control_rows / p.sweep_rows:.1f}× its rows)."
        )
    if controls.random + controls.shuffled:
        display.note(floor_sentence(controls.random + controls.shuffled))


@app.command(cls=PlainHelpCommand, short_help="Show what a spec will cost, per model; offline-safe.")
def plan(
    spec: Path = typer.Argument(..., help="Experiment spec (TOML), e.g. experiments/qwen3_family.toml."),
    check_hosts: bool = typer.Option(
        False, "--check-hosts", help="Ask each remote host (its open /status) whether it serves the model."
    ),
) -> None:
    """Print, per model, what SPEC will cost: backend, engine, host, requests, forward
    passes and estimated bytes each way. Makes no network call unless --check-hosts."""
    from remote_steer.display import RichDisplay
    from remote_steer.run.plan import plan_experiment
    from remote_steer.run.spec import load_spec

    try:
        plans, estimated = plan_experiment(load_spec(spec), check_hosts=check_hosts)
    except (RemoteSteerError, OSError) as error:
        fail(error)
        return

    def size(n: float | None) -> str:
        if n is None:
            return "?"
        for unit in ("B", "KB", "MB", "GB"):
            if n < 1000:
                return f"{n:.0f} {unit}"
            n /= 1000
        return f"{n:.1f} TB"

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
    caption = f"items: train+test over {len(load_spec(spec).data.concepts)} concepts"
    if estimated:
        caption += "; data not readable here, counts estimated from max_items"
    RichDisplay().table(
        f"Plan for {spec}",
        [
            "model",
            "training",
            "backend",
            "engine",
            "host",
            "hosted",
            "layers",
            "sweep",
            "items",
            "requests",
            "forward passes",
            "sent ≈",
            "received ≈",
        ],
        rows,
        caption,
    )
    _plan_controls(load_spec(spec), plans)
    from remote_steer.run.memory_plan import memory_rows  # peak memory per model and device

    def gb(v: float | None) -> str:
        return "?" if v is None else f"{v:.2f}"

    memory = [
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
        for m in memory_rows(load_spec(spec))
    ]
    RichDisplay().table(
        "Peak memory (fast engine, ~160-token prompts)",
        ["model", "device", "dtype", "weights", "group", "block", "peak", "free", "fits"],
        memory,
        "Sizes in GB. group: prompt K/V cache + window residuals; block: one staircase block's transient "
        "(per-row prefix K/V copies, attention, MLP); free: on the device now ('?' without it); "
        "'smaller blocks': the engine shrinks them to fit",
    )

    _plan_generation(load_spec(spec), size)
