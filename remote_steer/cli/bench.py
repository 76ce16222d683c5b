"""``remote-steer bench``: time the sweep or generation against other implementations."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from remote_steer.cli.app import command

if TYPE_CHECKING:
    from remote_steer.bench.generation_bench import GenBenchOptions


@command(short_help="Time the sweep against steering-vectors and the floor.")
def bench(  # noqa: PLR0913 - typer: one parameter per command-line option
    items: int = typer.Option(64, "--items", help="Held-out items swept (as many training items train the vector)."),
    layers: int = typer.Option(24, "--layers", help="Decoder layers of the benchmark toy."),
    hidden: int | None = typer.Option(
        None, "--hidden", help="Hidden size of the benchmark toy (default 256), or of the --shape (default: its own)."
    ),
    shape: str | None = typer.Option(
        None, "--shape", help='A registry model, e.g. "Qwen3-4B": random weights with its depth, heads and vocabulary.'
    ),
    width_scale: float | None = typer.Option(
        None, "--width-scale", help="Scale the --shape's width (hidden size, MLP) by this factor; depth is kept."
    ),
    model: str = typer.Option(
        "toy/qwen3", "--model", help='Without --shape: "toy/qwen3" or "small/smollm2-135m-instruct".'
    ),
    only: str = typer.Option("abcd", "--only", help='Implementations to run, e.g. "ad" (default all: "abcd").'),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Reduced mode (8 items, one repeat, (c) on 1 item, no (b)): < 5 min; "
        "with --generation a tiny toy and few tokens.",
    ),
    device: str = typer.Option(
        "cpu", "--device", help='"cpu"; for CUDA run tests/gpu_check.py (full-size shapes in bf16).'
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Upstream model-written-evals root (default: the bundled fixtures)."
    ),
    threads: int = typer.Option(2, "--threads", help="Torch threads in every implementation."),
    batch_size: int = typer.Option(
        16, "--batch-size", help="Prompts per forward pass, the same for every batched implementation."
    ),
    repeats: int = typer.Option(3, "--repeats", help="Alternating runs of every implementation; medians are reported."),
    plain_items: int = typer.Option(
        8, "--plain-items", help="Items the plain protocol (c) sweeps, scaled to all; 0 = all."
    ),
    positions: str = typer.Option("assistant", "--positions", help='"assistant" or "all".'),
    skip_steering_vectors: bool = typer.Option(False, "--skip-steering-vectors", help="Leave out (b)."),
    sv_python: Path = typer.Option(
        Path(".bench-venv/bin/python"), "--sv-python", help="Python of the steering-vectors venv."
    ),
    output_dir: Path = typer.Option(
        Path("outputs/bench"), "--output-dir", help="Where the JSON and Markdown results go."
    ),
    generation: bool = typer.Option(
        False, "--generation", help="Benchmark steered generation instead (docs/generation.md)."
    ),
    new_tokens: int = typer.Option(64, "--new-tokens", help="--generation: tokens every row decodes (forced length)."),
    plain_configs: int = typer.Option(
        1, "--plain-configs", help="--generation: configurations (b) and (c) run, time scaled to all; 0 = all."
    ),
) -> None:
    """Time this project's sweep against steering-vectors, the plain protocol and the compute floor.

    With --generation: this project's generation engine against one nnsight generate
    per configuration, transformers generate with a hook, and the plain-PyTorch floor.

    Each implementation runs in its own process on the same prompts, alternating;
    the table shows medians, token × layer work, peak memory and the ratios. See the
    README's Benchmark section.
    """
    if generation:
        from remote_steer.bench.generation_bench import GenBenchOptions

        if quick:
            gen_options = GenBenchOptions.quick(threads=threads, output_dir=str(output_dir))
        else:
            gen_options = GenBenchOptions(
                items=items,
                layers=layers,
                hidden=hidden or 128,
                threads=threads,
                repeats=repeats,
                new_tokens=new_tokens,
                output_dir=str(output_dir),
                plain_configs=plain_configs,
            )
        _bench_generation(gen_options)
        return
    from remote_steer.bench.bench import BenchOptions, check_options, run_bench, shape_width, show, write_result
    from remote_steer.display import RichDisplay

    check_options(positions, device)
    shape_hidden = shape_width(shape, width_scale, hidden)
    options = BenchOptions(
        items=items,
        layers=layers,
        hidden=hidden or 256,
        data=str(data) if data else None,
        threads=threads,
        shape=shape,
        shape_hidden=shape_hidden,
        model=model,
        implementations=only,
        batch_size=batch_size,
        repeats=repeats,
        plain_items=plain_items,
        positions="all" if positions == "all" else "assistant",  # validated above
        skip_steering_vectors=skip_steering_vectors,
        sv_python=str(sv_python),
        output_dir=str(output_dir),
    )
    if quick:
        from remote_steer.bench.bench import apply_quick

        options = apply_quick(options)
    display = RichDisplay()
    result = run_bench(options, display)
    json_path, md_path = write_result(result, output_dir)
    show(result, display)
    typer.echo(f"bench: {json_path} and {md_path}")


def _bench_generation(options: GenBenchOptions) -> None:
    from remote_steer.bench.generation_bench import run_generation_bench, write_generation_result
    from remote_steer.display import RichDisplay

    result = run_generation_bench(options, RichDisplay())
    command = "remote-steer bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "remote-steer bench --generation"
    json_path, md_path, text = write_generation_result(result, Path(options.output_dir), command)
    typer.echo(text)
    typer.echo(f"bench: {json_path} and {md_path}")
