"""The engine a stage runs, chosen once: fast where ``protocol.fast_path`` allows, else plain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from remote_steer.data.prompts import SteerPositions
from remote_steer.engines.generation_fast import FastGenerationEngine
from remote_steer.engines.generation_plain import GenerationEngine, GenerationResult
from remote_steer.engines.protocol import Engine, fast_path
from remote_steer.engines.sweep_fast import FastLogitDiffEngine
from remote_steer.engines.sweep_plain import LogitDiffEngine, SweepResult
from remote_steer.models.loading import LoadedModel
from remote_steer.remote.backend import Backend

ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Chosen(Generic[ResultT]):
    engine: Engine[ResultT]
    reason: str  # one line: which engines run, and why


@dataclass(frozen=True)
class GenerationSettings:
    """How the generation engines decode (the spec's ``[generation]`` table)."""

    batch_rows: int = 32
    max_new_tokens: int = 384
    thinking: bool = False
    answer_tokens: int = 16


def sweep_engine(
    model: LoadedModel, backend: Backend, batch_rows: int, positions: SteerPositions, wanted: str = "fast"
) -> Chosen[SweepResult]:
    """The logit-diff engine for ``model``: ``FastLogitDiffEngine`` or ``LogitDiffEngine``."""
    fast, reason = fast_path(model, wanted)
    engine_class = FastLogitDiffEngine if fast else LogitDiffEngine
    return Chosen(engine_class(model, backend, batch_rows, positions), reason)


def generation_engine(
    model: LoadedModel,
    backend: Backend,
    positions: SteerPositions,
    settings: GenerationSettings,
    wanted: str = "fast",
) -> Chosen[GenerationResult]:
    """The generation engine for ``model``: ``FastGenerationEngine`` or ``GenerationEngine``."""
    fast, reason = fast_path(model, wanted)
    engine_class = FastGenerationEngine if fast else GenerationEngine
    engine = engine_class(
        model,
        backend,
        settings.batch_rows,
        positions,
        settings.max_new_tokens,
        settings.thinking,
        settings.answer_tokens,
    )
    return Chosen(engine, reason)
