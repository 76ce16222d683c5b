"""The Python API: run a spec, open a run directory, read its tables and vectors.

    import remote_steer as rs

    run = rs.run_spec("experiments/quickstart.toml", output_dir="outputs")   # or rs.open_run(path)
    run.results          # logit-diff table (pandas), one row per item × layer × strength
    run.summary          # best layer and Glass's delta per model × dataset
    run.generation       # free answers (None unless the generation mode ran)
    vector = run.vector("toy/qwen3", "corrigibility")   # a SteeringVector

Everything here reads the run directory the CLI writes (see docs/reference.md), so
a run started in a terminal opens in a notebook and the other way round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from remote_steer.errors import RemoteSteerError
from remote_steer.rundir import Manifest, RunDir
from remote_steer.vectors import SteeringVector


class RunNotFound(RemoteSteerError):
    """The path is not a remote-steer run directory."""


@dataclass
class Run:
    """A run directory, read lazily: each table is read on first access."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.dir = RunDir(self.path)
        if not self.dir.is_run():
            raise RunNotFound(
                f"{self.path}: not a run directory (no {self.dir.manifest_path.name}); "
                "run `remote-steer run SPEC` first"
            )

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r}, models={self.models}, concepts={self.concepts})"

    @cached_property
    def manifest(self) -> Manifest:
        """The typed run record: spec, versions, model revisions, seed, git commit,
        status, traffic (``manifest.get(key)`` reads it as the JSON file has it)."""
        return self.dir.manifest()

    @property
    def status(self) -> str:
        return self.manifest.status

    @property
    def spec(self) -> dict[str, Any]:
        """The spec the run was made from, as a dict (``manifest.spec``)."""
        return self.manifest.spec

    @property
    def models(self) -> list[str]:
        """The models' labels: names in results, vector folders and every ``--model``."""
        from remote_steer.run.spec import entry_label

        return [entry_label(m) for m in self.spec.get("models", [])]

    @property
    def concepts(self) -> list[str]:
        return list(self.spec.get("data", {}).get("concepts", []))

    def _table(self, name: str) -> pd.DataFrame | None:
        return self.dir.table(name)

    @cached_property
    def results(self) -> pd.DataFrame:
        """The logit-diff table: model, dataset, item_id, layer, strength, baseline,
        steered, delta, … (empty if the logit mode did not run)."""
        frame = self._table("logit_diff")
        return frame if frame is not None else pd.DataFrame()

    @cached_property
    def generation(self) -> pd.DataFrame | None:
        """The generation table (baseline and steered free answers), or None."""
        return self._table("generation")

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Best layer and Glass's delta per model × dataset (results/summary.csv)."""
        return self.dir.summary()

    def vector_path(self, model: str, concept: str) -> Path:
        return self.dir.vector_path(model, concept)

    def where(self, model: str) -> tuple[str | None, str | None]:
        """(backend, host) the run recorded for ``model``."""
        return self.manifest.where(model)

    def vector(self, model: str, concept: str) -> SteeringVector:
        """The CAA vectors (every layer) of ``model`` × ``concept``."""
        path = self.vector_path(model, concept)
        if not path.is_file():
            raise RunNotFound(
                f"{self.path}: no vector for model {model!r} × concept {concept!r} "
                f"(models: {', '.join(self.models) or 'none'}; concepts: {', '.join(self.concepts) or 'none'})"
            )
        return SteeringVector.load(path)

    def vectors(self) -> dict[tuple[str, str], SteeringVector]:
        """Every saved vector, keyed by (model, concept)."""
        out = {}
        for model in self.models:
            for concept in self.concepts:
                if self.vector_path(model, concept).is_file():
                    out[(model, concept)] = self.vector(model, concept)
        return out

    def is_toy(self, model: str) -> bool:
        return model.startswith("toy/")


def open_run(path: str | Path) -> Run:
    """Open an existing run directory (what ``remote-steer run`` wrote)."""
    return Run(Path(path))


def load_spec(path: str | Path):
    """Read and check a spec file; returns an ``ExperimentSpec`` (a frozen dataclass:
    change it with ``dataclasses.replace``)."""
    from remote_steer.run.spec import load_spec as _load

    return _load(path)


def run_spec(
    spec: Any,
    *,
    name: str | None = None,
    output_dir: str | Path | None = None,
    fresh: bool = False,
    backend: str | None = None,
    host: str | None = None,
    modes: Sequence[str] | None = None,
    progress: bool = False,
) -> Run:
    """Run (or resume) an experiment and return its ``Run``.

    ``spec`` is a path to a TOML spec, TOML text of a spec, or an ``ExperimentSpec``.
    The keyword arguments mirror ``remote-steer run``'s options. With ``progress``
    the terminal shows the same bars and tables as the CLI; by default it is silent.
    """
    from remote_steer.display import NullDisplay, RichDisplay
    from remote_steer.run.runner import run_experiment
    from remote_steer.run.spec import ExperimentSpec, parse_modes, parse_spec

    if isinstance(spec, ExperimentSpec):
        experiment = spec
    elif isinstance(spec, (str, Path)) and (isinstance(spec, Path) or "\n" not in spec):
        experiment = load_spec(spec)
    elif isinstance(spec, str):
        experiment = parse_spec(spec)
    else:
        raise TypeError(f"spec: expected a path, TOML text or an ExperimentSpec, got {type(spec).__name__}")
    changes: dict[str, Any] = {}
    if name:
        changes["name"] = name
    if output_dir is not None:
        changes["output_dir"] = str(output_dir)
    if modes is not None:
        parsed = parse_modes(tuple(modes), "modes")
        changes["evaluation"] = dataclasses.replace(experiment.evaluation, modes=parsed)
    if backend or host:
        changes["models"] = tuple(
            dataclasses.replace(
                m,
                backend=backend or m.backend,  # type: ignore[arg-type]  # a str: Backend() validates it
                host=host or m.host,
            )
            for m in experiment.models
        )
    experiment = dataclasses.replace(experiment, **changes)
    outcome = run_experiment(experiment, display=RichDisplay() if progress else NullDisplay(), fresh=fresh)
    return Run(outcome.run_dir)


def load_model(name: str, *, dtype: str = "float32", device: str = "cpu", backend: str = "local"):
    """A model ready for tracing: ``.nn`` is the nnsight model (``.nn._module`` the
    plain PyTorch one), ``.tokenizer`` its tokenizer. With ``backend="remote"`` only
    config and tokenizer load; the weights stay on the server."""
    from remote_steer.models.loading import load_model as _load
    from remote_steer.models.loading import resolve

    return _load(resolve(name), dtype=dtype, device=device, weights=backend == "local")
