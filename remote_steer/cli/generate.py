"""``remote-steer generate``: ask a question; baseline and steered answers."""

from __future__ import annotations

from pathlib import Path

import typer

from remote_steer.cli.app import command, fail
from remote_steer.errors import RemoteSteerError


@command(short_help="Ask a question; see baseline and steered answers.")
def generate(  # noqa: PLR0913 - typer: one parameter per command-line option
    run_dir: Path = typer.Argument(..., help="A run directory (holds vectors/)."),
    question: str | None = typer.Argument(None, help="The question to ask (omit with --chat)."),
    model: str = typer.Option(..., "--model", "-m", help="Model of the run, e.g. toy/qwen3."),
    concept: str = typer.Option(..., "--concept", "-c", help="Concept whose vector steers, e.g. corrigibility."),
    layer: int = typer.Option(..., "--layer", "-l", help="Decoder layer to steer (0-based)."),
    strength: list[float] = typer.Option(
        ..., "--strength", "-s", help="Strength in raw units (as in the sweep); repeat for several."
    ),
    chat: bool = typer.Option(False, "--chat", help="Ask questions in a loop (empty line or Ctrl-D ends)."),
    backend: str | None = typer.Option(
        None, "--backend", help='"local", "remote" or "simulated-remote" (default: the run\'s).'
    ),
    host: str | None = typer.Option(None, "--host", help="Remote server URL (default: the run's, then $NDIF_HOST)."),
    max_new_tokens: int = typer.Option(
        40, "--max-new-tokens", help="Most tokens per answer; an answer ends earlier only at the model's end of turn."
    ),
    positions: str = typer.Option("assistant", "--positions", help='Prompt positions steered: "assistant" or "all".'),
) -> None:
    """Answer QUESTION unsteered and steered, side by side, one row per strength.

    Uses the vector the run extracted for MODEL × CONCEPT at LAYER, greedy
    decoding and the model's chat template; all strengths go in one request.
    """
    from remote_steer.chat import ChatSession, show_answers
    from remote_steer.display import RichDisplay

    if question is None and not chat:
        fail(RemoteSteerError("generate: give a QUESTION, or --chat to ask several"))
        return
    display = RichDisplay()
    try:
        session = ChatSession(
            run_dir,
            model,
            concept,
            layer,
            strength,
            backend=backend,
            host=host,
            max_new_tokens=max_new_tokens,
            positions=positions,
        )
        if question:
            show_answers(display, session.ask(question))
        while chat:
            try:
                line = input("question> ").strip()
            except EOFError:
                break
            if not line:
                break
            show_answers(display, session.ask(line))
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
