"""Ask a steered model a question of your own: ``remote-steer generate``.

The question goes through the same generation engine as a run's generation mode
(the model's chat template with thinking off, greedy decoding, the vector added at
the chosen layer from the steered prompt positions through every generated token),
baseline and every strength in one request, locally or remotely. Strengths are raw
units, as in the sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from remote_steer.errors import RemoteSteerError

if TYPE_CHECKING:
    from remote_steer.data.prompts import SteerPositions

TOY_WARNING = (
    "{model} is a random-weight toy: its answers are noise (it shows the mechanics only; use a real model for meaning)."
)


class ChatSettings(TypedDict, total=False):
    """How a session reaches and runs the model (each defaults as shown)."""

    backend: str | None  # None: the run's spec, then "local"
    host: str | None  # None: the run's spec, then $NDIF_HOST
    max_new_tokens: int  # 40
    positions: str  # "assistant" or "all"; "assistant"


@dataclass(frozen=True)
class SteeredAnswers:
    question: str
    model: str
    concept: str
    layer: int
    strengths: tuple[float, ...]
    baseline: str
    steered: tuple[str, ...]  # one per strength
    is_toy: bool


class ChatSession:
    """One model and one vector, loaded once; ``ask`` answers a question under
    every strength (single-turn: no history is kept between questions)."""

    def __init__(
        self,
        run_dir: str | Path,
        model: str,
        concept: str,
        layer: int,
        strengths: Sequence[float],
        **settings: Unpack[ChatSettings],
    ) -> None:
        from remote_steer.api import open_run
        from remote_steer.data.prompts import POSITIONS
        from remote_steer.models.loading import load_model, resolve
        from remote_steer.remote.backend import Backend
        from remote_steer.run.spec import either

        backend, host = settings.get("backend"), settings.get("host")
        max_new_tokens, positions = settings.get("max_new_tokens", 40), settings.get("positions", "assistant")
        run = open_run(run_dir)
        if model not in run.models:
            raise RemoteSteerError(f"--model {model!r}: not in {run.path} (it has: {', '.join(run.models)})")
        if concept not in run.concepts:
            raise RemoteSteerError(f"--concept {concept!r}: not in {run.path} (it has: {', '.join(run.concepts)})")
        if positions not in POSITIONS:
            raise RemoteSteerError(f"--positions {positions!r}: expected {either(POSITIONS)}")
        if max_new_tokens < 1:
            raise RemoteSteerError(f"--max-new-tokens {max_new_tokens}: expected at least 1")
        self.vector = run.vector(model, concept)
        if not 0 <= layer < self.vector.n_layers:
            raise RemoteSteerError(f"--layer {layer}: {model} has decoder layers 0..{self.vector.n_layers - 1}")
        if not strengths:
            raise RemoteSteerError("--strength: give at least one strength, e.g. --strength -4 --strength 4")
        from remote_steer.run.spec import entry_label

        spec_model: dict[str, Any] = next((m for m in run.spec.get("models", []) if entry_label(m) == model), {})
        recorded_kind, recorded_host = run.where(model)
        kind = backend or recorded_kind or "local"
        # the host the run recorded, unless told otherwise (or the backend changes)
        default_host = recorded_host if kind == recorded_kind else None
        # kind: a str from --backend or the run's record; Backend() validates it
        self.backend = Backend(kind, host=host or default_host)  # type: ignore[arg-type]
        self.loaded = load_model(
            resolve(spec_model.get("name", model), spec_model.get("revision")),
            dtype=spec_model.get("dtype", "auto"),
            device=spec_model.get("device", "cpu"),
            weights=not self.backend.is_remote,
        )
        self.model, self.concept, self.layer = model, concept, layer
        self.strengths = tuple(float(s) for s in strengths)
        self.max_new_tokens = max_new_tokens
        self.positions: SteerPositions = "all" if positions == "all" else "assistant"  # validated above

    def ask(self, question: str) -> SteeredAnswers:
        from remote_steer.data.prompts import EncodedItem, chat_text
        from remote_steer.engines.generation_plain import GenerationEngine
        from remote_steer.engines.sweep_plain import SteerConfig

        tokenizer = self.loaded.tokenizer
        before, prompt = chat_text(tokenizer, question)
        ids = tuple(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        start = len(tokenizer(before, add_special_tokens=False)["input_ids"])
        item = EncodedItem("question", self.concept, "A", ids, min(start, len(ids) - 1), 0, 0)
        from remote_steer.engines.answer_stop import free_answer_rule

        # a free answer: it runs to end of turn or --max-new-tokens, not to the A/B rule's
        # first ")" or 16 answer tokens (the sweep's generation mode keeps those)
        engine = GenerationEngine(
            self.loaded,
            self.backend,
            batch_rows=32,
            positions=self.positions,
            max_new_tokens=self.max_new_tokens,
            stop_rule=free_answer_rule(self.loaded),
        )
        configs = [SteerConfig(self.layer, s) for s in self.strengths]
        result = engine.run([item], self.vector.vectors, configs)
        return SteeredAnswers(
            question,
            self.model,
            self.concept,
            self.layer,
            self.strengths,
            result.baseline_text[0],
            tuple(result.steered_text[0]),
            self.loaded.is_toy,
        )


def show_answers(display, answers: SteeredAnswers) -> None:
    """Baseline and steered answers side by side (one row per strength). Answers wrap
    between words; the strength column never wraps."""
    rows = [("baseline (0)", answers.baseline or "(empty)")]
    rows += [(f"{s:+g}", text or "(empty)") for s, text in zip(answers.strengths, answers.steered, strict=True)]
    title = f"{answers.model} · {answers.concept} · layer {answers.layer} (raw units)"
    caption = TOY_WARNING.format(model=answers.model) if answers.is_toy else ""
    console = getattr(display, "console", None)
    if console is None:
        display.table(title, ["strength", "answer"], rows, caption)
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(  # Text throughout: a model's "[...]" is shown, never read as markup
        title=Text(title),
        caption=Text(caption) if caption else None,
        box=box.SIMPLE_HEAD,
        title_justify="left",
        caption_justify="left",
        show_lines=True,
    )
    table.add_column("strength", justify="right", no_wrap=True)
    # wraps at spaces; only a "word" wider than the column (CJK text has no spaces) is folded, never cut
    table.add_column("answer", justify="left", overflow="fold")
    for strength, text in rows:
        table.add_row(Text(strength), Text(text.strip()))
    console.print(table)
