"""``remote-steer export``: vectors as GGUF, safetensors or steering-vectors."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from remote_steer.cli.app import command


@command(short_help="Write vectors as GGUF, safetensors or steering-vectors.")
def export(
    run_dir: Path = typer.Argument(..., help="A run directory (holds vectors/)."),
    fmt: str = typer.Option(..., "--format", "-f", help='"gguf" (llama.cpp), "safetensors" or "steering-vectors".'),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Directory for the files (default: RUN_DIR/export/FORMAT)."
    ),
    model: list[str] | None = typer.Option(None, "--model", "-m", help="Only this model (repeatable)."),
    concept: list[str] | None = typer.Option(None, "--concept", "-c", help="Only this concept (repeatable)."),
    layer: list[int] | None = typer.Option(
        None, "--layer", "-l", help="Only this decoder layer (repeatable; default all)."
    ),
) -> None:
    """Write the run's steering vectors for other tools, one file per model × concept.

    gguf is a llama.cpp control vector, used with llama.cpp's flags as

    \b
      llama-cli -m MODEL.gguf --control-vector-scaled FILE.gguf:S \\
        --control-vector-layer-range L L

    (strength S at layer L; --control-vector FILE.gguf is strength 1).

    steering-vectors is that library's SteeringVector as safetensors. See
    docs/reference.md, "Exporting vectors".
    """
    from remote_steer.export import export_vectors

    written = export_vectors(run_dir, fmt, output=output, models=model, concepts=concept, layers=layer)
    width = shutil.get_terminal_size().columns  # COLUMNS when piped, else 80
    for item in written:
        layers = f"layers {item.layers[0]}..{item.layers[-1]}" if len(item.layers) > 1 else f"layer {item.layers[0]}"
        about = f"({item.model} · {item.concept} · {layers})"
        line = f"{item.path}  {about}"
        # a narrow terminal gets the path whole on its own line (copyable), what it holds below
        typer.echo(line if len(line) <= width else f"{item.path}\n  {about}")
    if fmt == "gguf":
        typer.echo("note: layer 0 is left out of GGUF files (llama.cpp cannot steer it)")
