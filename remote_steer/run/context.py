"""The run's shared state, typed: what every stage of one model reads.

``RunContext`` holds the plan, the prepared model, its backend, the run directory,
the display, the run's part counters and the ``after_part`` hook; each stage
(``rigour.vectors_for``, ``sweep_stage``, ``rigour.controls_stage``,
``letter_control.run_letter_control``, ``generation_stage``) takes it instead of
a dozen positional parameters. The model's weights load on first use
(``RunContext.model``), only if some work is left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from remote_steer.display import Display
from remote_steer.engines.protocol import fast_path
from remote_steer.models.loading import LoadedModel, load_model
from remote_steer.remote.backend import Backend
from remote_steer.rundir import RunDir

if TYPE_CHECKING:
    from remote_steer.data.preprocess import ConceptSplit
    from remote_steer.data.prompts import EncodedItem
    from remote_steer.models.loading import ModelSource
    from remote_steer.run.spec import ExperimentSpec, ModelSpec


@dataclass
class PreparedModel:
    """One model of a run, ready: its source, layers, label and tokenized items (no weights)."""

    spec: ModelSpec
    source: ModelSource
    n_layers: int
    hidden_size: int
    sweep_layers: list[int]
    generation_layers: list[int]
    training: str
    encoded: dict[str, tuple[list[EncodedItem], list[EncodedItem]]] = field(
        default_factory=dict
    )  # concept -> (train, test)
    generation_encoded: dict[str, list[EncodedItem]] = field(default_factory=dict)  # concept -> test, for generation
    client_model: LoadedModel | None = None  # remote: the weightless model the key probe was built on
    thinking: bool = False  # generation prompts open the assistant turn with thinking on


@dataclass
class Plan:
    """A validated run: the spec, every concept's split and every prepared model."""

    spec: ExperimentSpec
    splits: dict[str, ConceptSplit]
    models: list[PreparedModel]
    pace: dict[str, Any] = field(default_factory=dict)  # run/estimate.py: work per step, time and work so far
    servers: dict[str, dict[str, str]] = field(default_factory=dict)  # host -> its /env's python and nnsight


@dataclass
class Counts:
    """Checkpointed parts this session computed, and parts it found already saved."""

    computed: int = 0
    skipped: int = 0


@dataclass
class RunContext:
    """One model's run: the plan, that model, where and how its work runs, and what the
    run counts; shared by every stage of every concept of the model."""

    plan: Plan
    prepared: PreparedModel
    store: RunDir
    backend: Backend
    display: Display
    counts: Counts
    after_part: Callable[[], None] | None = None
    loaded: LoadedModel | None = field(default=None, init=False)
    # run/side_effects.py: each concept's prompt passes kept by its sweep, and whether they fit
    held: dict[str, Any] = field(default_factory=dict, init=False)
    holding: bool | None = field(default=None, init=False)
    # run/methods_stage.py: each concept's extraction (vectors, whole-residual readout) until its methods run
    readouts: dict[str, Any] = field(default_factory=dict, init=False)

    @property
    def spec(self) -> ExperimentSpec:
        return self.plan.spec

    @property
    def name(self) -> str:
        return self.prepared.spec.label

    def model(self) -> LoadedModel:
        """The model, loaded on first call (weights load only if some work is left)."""
        if self.loaded is None:
            self.loaded = self._load()
        return self.loaded

    def _load(self) -> LoadedModel:
        prepared, backend, name = self.prepared, self.backend, self.name
        toy = " (random-weight toy)" if prepared.source.is_toy else ""
        if backend.is_remote and prepared.client_model is not None:
            return prepared.client_model
        if backend.is_remote:
            self.display.note(f"Preparing {name}{toy} for {backend.host} (weights stay on the server)")
        else:
            self.display.note(f"Loading {name}{toy}")
        loaded = load_model(
            prepared.source, dtype=prepared.spec.dtype, device=prepared.spec.device, weights=not backend.is_remote
        )
        if prepared.spec.engine == "fast" and not fast_path(loaded)[0]:
            self.display.note(f"{name}: {fast_path(loaded)[1]}")
        return loaded
