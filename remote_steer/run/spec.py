"""Experiment specs: TOML files, read strictly.

Every field is known; a misspelt one is an error that names the file, line and
field and suggests the closest known name. See README "Spec format".
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from remote_steer.errors import SpecError
from remote_steer.remote.backend import BACKEND_KINDS, BackendKind

if TYPE_CHECKING:
    from remote_steer.data.prompts import SteerPositions


@dataclass(frozen=True)
class DataSpec:
    source: str = "fixtures"  # "fixtures", "hub", or a local directory laid out like upstream
    concepts: tuple[str, ...] = ("corrigibility",)
    max_items: int | None = None  # per concept, after preprocessing (None: all)
    test_fraction: float = 0.5
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # concept -> files override
    flip: tuple[str, ...] = ()  # concepts whose polarity is reversed (matching ↔ not matching)


def short_label(name: str) -> str:
    """A model's name in results when no ``label`` is set: a local checkpoint path
    (starting with ".", "/" or "~") by its directory's name; any other name unchanged."""
    if not name.startswith((".", "/", "~")):
        return name
    path = Path(name).expanduser()
    return path.name if path.name not in ("", ".", "..") else path.resolve().name


def entry_label(model: dict[str, Any]) -> str:
    """``ModelSpec.label`` of a run's recorded spec entry (its manifest's ``models``)."""
    return str(model.get("display_name") or short_label(str(model.get("name"))))


@dataclass(frozen=True)
class ModelSpec:
    name: str  # toy name, registry name, hub id or local path
    dtype: str = "auto"
    device: str = "cpu"  # "cpu", "cuda", "cuda:N", or "auto" (device_map="auto" over all GPUs)
    revision: str | None = None
    backend: BackendKind = "local"  # "local", "remote" (NDIF) or "simulated-remote"
    host: str | None = None  # remote server URL; default $NDIF_HOST, then nnsight's configured host
    engine: str = "fast"  # "fast" (prefix cache, shipped kernel via nnsight.register) or "plain" (nnsight only)
    layers: tuple[int, ...] | None = None  # this model's sweep layers (default: evaluation.layers / the sweep)
    strengths: tuple[float, ...] | None = None  # this model's strengths (default: evaluation.strengths)
    training: str | None = None  # training label for grouping (default: the registry's, else "unknown")
    # name in results, tables, the run directory and every --model (TOML: label or display_name;
    # default: the name, or a local checkpoint's directory name)
    display_name: str | None = None

    @property
    def label(self) -> str:
        """The model's name in results (``display_name`` if set, else ``short_label``)."""
        return self.display_name or short_label(self.name)


@dataclass(frozen=True)
class ExtractionSpec:
    batch_size: int = 16  # A/B pairs per forward pass (two rows each)


@dataclass(frozen=True)
class EvaluationSpec:
    strengths: tuple[float, ...] = (-1.0, 1.0)
    layers: tuple[int, ...] | None = None  # explicit layers; None: from layer_start_fraction to the last
    layer_start_fraction: float = 0.33
    modes: tuple[str, ...] = ("logit",)  # "logit" and/or "generation"
    positions: SteerPositions = "assistant"  # "assistant" (CAA convention) or "all"
    batch_size: int = 64  # rows (item × configuration) per forward pass
    chunk_items: int = 16  # items per checkpointed results part and per request (resume granularity)
    request_token_budget: int = 2_000_000  # max padded tokens (rows × width) in one request
    strength_unit: str = (
        "raw"  # "raw": s × the vector; "residual": s × the layer's mean residual norm, in the vector's direction
    )
    allow_large_strengths: bool = False  # run strengths whose vector exceeds 10× the residual norm (docs/rigour.md)


@dataclass(frozen=True)
class GenerationSpec:
    """Free-generation evaluation (``evaluation.modes`` includes "generation")."""

    layers: tuple[int, ...] | None = None  # absolute layers; default: up to 4 layers spread over the sweep
    layer_fractions: tuple[float, ...] | None = None  # depth fractions: layer round(f × n_layers)
    best_layers: int | None = None  # the k best layers of the model × concept's logit sweep
    strengths: tuple[float, ...] | None = None  # default: evaluation.strengths
    max_new_tokens: int = 384  # room for a short chain of thought and the answer
    answer_tokens: int = 16  # after </think>, tokens after which the answer counts as given
    batch_size: int = 32  # rows (item × configuration) decoded together
    thinking: bool | None = None  # None: on where the chat template supports it (Qwen3)
    models: tuple[str, ...] | None = None  # generate for these [[models]] names only (default all)
    concepts: tuple[str, ...] | None = None  # and these data.concepts only (default all)

    def covers(self, model: str, concept: str) -> bool:
        """Whether generation runs for this model × concept."""
        return (self.models is None or model in self.models) and (self.concepts is None or concept in self.concepts)


@dataclass(frozen=True)
class ControlsSpec:
    """Opt-in rigour checks (docs/rigour.md). Each costs its count × the sweep's steered rows."""

    random: int = 0  # random directions with the vector's norm, per layer
    shuffled: int = 0  # CAA vectors from shuffled labels (matching letter permuted in the training set)
    bootstrap: int = 0  # CAA vectors from bootstrap resamples of the training items (vector uncertainty)

    @property
    def any(self) -> bool:
        return bool(self.random or self.shuffled or self.bootstrap)


def first_sweep_layer(fraction: float, n_layers: int) -> int:
    """The default sweep's first layer: the shallowest layer ``l`` whose depth
    ``(l + 1) / L`` (the depth column, ``models.registry.layer_depth``) is at least
    ``fraction``, i.e. ``ceil(fraction × L) − 1``. 0.33 of 12 layers: layer 3, depth 0.333;
    of 36: layer 11, depth 0.333."""
    return max(0, min(n_layers - 1, math.ceil(fraction * n_layers - 1e-9) - 1))


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    seed: int = 0
    output_dir: str = "outputs"
    data: DataSpec = field(default_factory=DataSpec)
    models: tuple[ModelSpec, ...] = ()
    extraction: ExtractionSpec = field(default_factory=ExtractionSpec)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    controls: ControlsSpec = field(default_factory=ControlsSpec)
    threads: int | None = None  # local runs: torch's CPU threads (default: the CPUs free; env vars win)
    path: str | None = field(default=None, compare=False)  # where it was read from

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("path")
        return out

    def sweep_layers(self, n_layers: int, model: ModelSpec | None = None) -> list[int]:
        """The evaluation layers for a model of ``n_layers`` decoder layers (its override first)."""
        ev = self.evaluation
        if model is not None and model.layers is not None:
            return list(model.layers)
        if ev.layers is not None:
            return list(ev.layers)
        return list(range(first_sweep_layer(ev.layer_start_fraction, n_layers), n_layers))

    def strengths_for(self, model: ModelSpec | None = None) -> tuple[float, ...]:
        """The model's strengths: its override, else ``evaluation.strengths``."""
        if model is not None and model.strengths is not None:
            return model.strengths
        return self.evaluation.strengths

    def generation_layers(self, n_layers: int) -> list[int]:
        """Generation is costly: by default up to four layers spread over the sweep.

        With ``best_layers`` the layers depend on the logit sweep's results; this
        returns the sweep layers the best are chosen from (the runner picks them).
        """
        if self.generation.layers is not None:
            return list(self.generation.layers)
        if self.generation.layer_fractions is not None:
            return sorted({min(n_layers - 1, max(0, round(f * n_layers))) for f in self.generation.layer_fractions})
        if self.generation.best_layers is not None:
            return self.sweep_layers(n_layers)
        sweep = self.sweep_layers(n_layers)
        if len(sweep) <= 4:
            return sweep
        picks = {sweep[round(i * (len(sweep) - 1) / 3)] for i in range(4)}
        return sorted(picks)

    def check_generation(self) -> None:
        """Generation subsets name known models and concepts; one way of giving layers."""
        gen, where = self.generation, self.path or "spec"
        names = [m.name for m in self.models]
        for model in gen.models or ():
            if model not in names:
                raise SpecError(
                    f"{where}: generation.models: {model!r} is not a [[models]] name; "
                    f"expected one of {', '.join(names)}"
                )
        for concept in gen.concepts or ():
            if concept not in self.data.concepts:
                raise SpecError(
                    f"{where}: generation.concepts: {concept!r} is not in data.concepts; "
                    f"expected one of {', '.join(self.data.concepts)}"
                )
        given = [k for k in ("layers", "layer_fractions", "best_layers") if getattr(gen, k) is not None]
        if len(given) > 1:
            raise SpecError(
                f"{where}: generation.{given[1]}: give one of generation.layers, layer_fractions, best_layers"
            )
        if (
            gen.best_layers is not None
            and "generation" in self.evaluation.modes
            and "logit" not in self.evaluation.modes
        ):
            raise SpecError(
                f'{where}: generation.best_layers: needs the logit sweep; expected evaluation.modes to include "logit"'
            )

    def check_layers(self, model: str, n_layers: int) -> None:
        for index, spec_model in enumerate(self.models):
            if spec_model.name == model:
                for layer in spec_model.layers or ():
                    if not 0 <= layer < n_layers:
                        raise SpecError(
                            f"{self.path or 'spec'}: models[{index}].layers: layer {layer} is outside {model} "
                            f"(decoder layers 0..{n_layers - 1})"
                        )
        for layer in self.generation.layers or ():
            if not 0 <= layer < n_layers:
                raise SpecError(
                    f"{spec_location(self.path, 'generation.layers')}: generation.layers: "
                    f"layer {layer} is outside {model} "
                    f"(decoder layers 0..{n_layers - 1})"
                )
        for layer in self.evaluation.layers or ():
            if not 0 <= layer < n_layers:
                raise SpecError(
                    f"{spec_location(self.path, 'evaluation.layers')}: evaluation.layers: "
                    f"layer {layer} is outside {model} "
                    f"(decoder layers 0..{n_layers - 1})"
                )


_SECTIONS = {
    "data": DataSpec,
    "extraction": ExtractionSpec,
    "evaluation": EvaluationSpec,
    "generation": GenerationSpec,
    "controls": ControlsSpec,
}
_CHOICES = {
    "evaluation.positions": ("assistant", "all"),
    "evaluation.strength_unit": ("raw", "residual"),
    "models.dtype": ("auto", "float32", "float16", "bfloat16"),
    "models.backend": BACKEND_KINDS,
    "models.engine": ("fast", "plain"),
}


def _line_of(text: str, key: str) -> int | None:
    """Line number of ``key = ...`` (or a ``[key]`` header) in the TOML text, for errors."""
    pattern = re.compile(rf"^\s*(\[+\s*)?(\S+\.)?{re.escape(key)}\s*(=|\])")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


def spec_location(path: str | None, dotted: str) -> str:
    """``path:line`` of a field such as ``data.concepts`` (the key inside its
    ``[section]``), or just the path when the line cannot be found."""
    if not path:
        return "spec"
    try:
        text = Path(path).read_text()
    except OSError:
        return path
    section, _, key = dotted.rpartition(".")
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"^\s*\[+\s*([^\]]+?)\s*\]+", line)
        if header:
            current = header.group(1)
            continue
        if current == section and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return f"{path}:{number}"
    return path


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text

    def fail(self, key: str, message: str) -> SpecError:
        line = _line_of(self.text, key.split(".")[-1].split("[")[0])
        where = f"{self.path}:{line}" if line else self.path
        return SpecError(f"{where}: {key}: {message}")

    def build(self, cls: type, values: Any, prefix: str) -> Any:
        if not isinstance(values, dict):
            raise self.fail(prefix, f"expected a table, got {type(values).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
        kwargs: dict[str, Any] = {}
        if cls is ModelSpec and "label" in values:  # "label" is display_name's short spelling
            if "display_name" in values:
                raise self.fail(f"{prefix}.label", "give label or display_name, not both")
            values = {("display_name" if k == "label" else k): v for k, v in values.items()}
        for key, value in values.items():
            dotted = f"{prefix}.{key}" if prefix else key
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.fail(dotted, f"unknown field{hint} Expected one of: {', '.join(known)}")
            kwargs[key] = self.convert(known[key], value, dotted)
        try:
            return cls(**kwargs)
        except TypeError as error:  # a required field is missing
            missing = re.findall(r"'(\w+)'", str(error))
            raise self.fail(prefix or "spec", f"missing required field {', '.join(missing)}") from None

    def convert(self, fld: dataclasses.Field, value: Any, key: str) -> Any:
        name = key.split(".")[-1]
        leaf = re.sub(r"\[\d+\]", "", key)
        if leaf in _CHOICES and value not in _CHOICES[leaf]:
            raise self.fail(key, f"{value!r} is not one of {', '.join(_CHOICES[leaf])}")
        if name in _SECTIONS and key == name:
            return self.build(_SECTIONS[name], value, key)
        if name == "models" and key == "models":
            if not isinstance(value, list) or not value:
                raise self.fail(key, "expected one or more [[models]] tables")
            return tuple(self.build(ModelSpec, v, f"models[{i}]") for i, v in enumerate(value))
        if name == "files":
            if not isinstance(value, dict):
                raise self.fail(key, "expected a table of concept = [paths]")
            return {c: tuple(self.strings(v, f"{key}.{c}")) for c, v in value.items()}
        if name in ("concepts", "flip") or key in ("generation.models",):
            return tuple(self.strings(value, key))
        if name == "layer_fractions":
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in value)
            ):
                raise self.fail(key, "expected a non-empty list of depth fractions in [0, 1], e.g. [0.4, 0.6]")
            return tuple(float(v) for v in value)
        if name == "strengths":
            if not isinstance(value, list) or not value or not all(isinstance(v, (int, float)) for v in value):
                raise self.fail(key, "expected a non-empty list of numbers, e.g. [-1.0, 1.0]")
            return tuple(float(v) for v in value)
        if name == "layers":
            if not isinstance(value, list) or not value or not all(isinstance(v, int) for v in value):
                raise self.fail(key, "expected a non-empty list of layer indices, e.g. [4, 5, 6]")
            return tuple(value)
        if name == "modes":
            try:
                return parse_modes(tuple(self.strings(value, key)), key)
            except SpecError as error:
                raise self.fail(key, str(error).split(": ", 1)[1]) from None
        if name in ("thinking", "allow_large_strengths"):
            if not isinstance(value, bool):
                raise self.fail(key, f"expected true or false, got {value!r}")
            return value
        if key.startswith("controls.") and name in ("random", "shuffled", "bootstrap"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise self.fail(key, f"expected a whole number ≥ 0 (how many vectors), got {value!r}")
            return value
        if name in (
            "max_items",
            "seed",
            "batch_size",
            "chunk_items",
            "request_token_budget",
            "max_new_tokens",
            "best_layers",
            "answer_tokens",
            "threads",
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "seed" else 1):
                raise self.fail(key, f"expected a positive integer, got {value!r}")
            return value
        if name in ("test_fraction", "layer_start_fraction"):
            if not isinstance(value, (int, float)) or not 0 <= value < 1 or (name == "test_fraction" and value == 0):
                raise self.fail(
                    key, f"expected a number in {'(0, 1)' if name == 'test_fraction' else '[0, 1)'}, got {value!r}"
                )
            return float(value)
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {value!r}")
        return value

    def strings(self, value: Any, key: str) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "expected a string or a non-empty list of strings")
        return value


MODES = ("logit", "generation")


def parse_modes(modes: tuple[str, ...], where: str) -> tuple[str, ...]:
    if not modes or (bad := [m for m in modes if m not in MODES]):
        raise SpecError(f'{where}: unknown mode {bad[0] if modes else ""!r}; expected "logit" and/or "generation"')
    return modes


ENGINES = ("fast", "plain")


def check_strengths(values: tuple[float, ...], where: str, *, need_positive: bool) -> None:
    """Strengths are finite numbers, each listed once; zero (the unsteered baseline,
    computed anyway) only beside others; with ``need_positive`` at least one is
    positive, since the best layer is picked at the strongest positive strength."""
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpecError(f"{where}: {value!r} is not a finite number; expected numbers, e.g. [-1.0, 1.0]")
    repeated = [v for v in dict.fromkeys(values) if values.count(v) > 1]
    if repeated:
        raise SpecError(f"{where}: {repeated[0]:g} is listed twice; expected each strength once")
    if all(v == 0 for v in values):
        raise SpecError(
            f"{where}: only 0 (the unsteered baseline, computed anyway); expected non-zero strengths, e.g. [-1.0, 1.0]"
        )
    if need_positive and not any(v > 0 for v in values):
        raise SpecError(
            f"{where}: no positive strength; expected at least one (the best layer is picked at the strongest "
            "positive strength), e.g. [-1.0, 1.0]"
        )


def validate(spec: ExperimentSpec) -> None:
    """Every check that needs no data file, model or network, for ``plan`` and ``run``
    alike: both call it before anything is written or computed. Command-line overrides
    are checked by ``apply_overrides`` (naming the flag) before they reach here."""
    path = spec.path

    def where(dotted: str, shown: str | None = None) -> str:
        return f"{spec_location(path, dotted)}: {shown or dotted}"

    parse_modes(spec.evaluation.modes, where("evaluation.modes"))
    for dotted, value in (
        ("evaluation.positions", spec.evaluation.positions),
        ("evaluation.strength_unit", spec.evaluation.strength_unit),
    ):
        if value not in _CHOICES[dotted]:
            raise SpecError(f"{where(dotted)}: {value!r} is not one of {', '.join(_CHOICES[dotted])}")
    logit = "logit" in spec.evaluation.modes
    check_strengths(spec.evaluation.strengths, where("evaluation.strengths"), need_positive=logit)
    for index, model in enumerate(spec.models):
        for key, choices in (("backend", BACKEND_KINDS), ("engine", ENGINES), ("dtype", _CHOICES["models.dtype"])):
            value = getattr(model, key)
            if value not in choices:
                raise SpecError(
                    f"{where(f'models.{key}', f'models[{index}].{key}')}: {value!r} is not one of {', '.join(choices)}"
                )
        if model.strengths is not None:
            check_strengths(
                model.strengths, where("models.strengths", f"models[{index}].strengths"), need_positive=logit
            )
        for layer in model.layers or ():
            if layer < 0:
                raise SpecError(f"{where('models.layers', f'models[{index}].layers')}: layer {layer} is negative")
    for dotted, layers in (
        ("evaluation.layers", spec.evaluation.layers),
        ("generation.layers", spec.generation.layers),
    ):
        for layer in layers or ():
            if layer < 0:
                raise SpecError(f"{where(dotted)}: layer {layer} is negative; expected decoder-layer indices from 0")
    if spec.generation.strengths is not None and "generation" in spec.evaluation.modes:
        check_strengths(spec.generation.strengths, where("generation.strengths"), need_positive=False)
    spec.check_generation()
    for concept in spec.data.flip:
        if concept not in spec.data.concepts:
            raise SpecError(
                f"{where('data.flip')}: {concept!r} is not among data.concepts ({', '.join(spec.data.concepts)})"
            )
    labels = [m.label for m in spec.models]
    for label in labels:
        if labels.count(label) > 1:
            raise SpecError(
                f"{path or 'spec'}: models: two entries are named {label!r}; "
                "expected distinct names (set label to tell them apart)"
            )


def apply_overrides(
    spec: ExperimentSpec,
    *,
    name: str | None = None,
    output_dir: str | None = None,
    modes: str | None = None,
    backend: str | None = None,
    host: str | None = None,
    engine: str | None = None,
    threads: int | None = None,
    allow_large_strengths: bool = False,
) -> ExperimentSpec:
    """The spec with ``run``'s command-line options applied; a bad value names its flag."""
    changes: dict[str, Any] = {}
    if threads is not None:
        if threads < 1:
            raise SpecError(f"--threads {threads}: expected a positive integer")
        changes["threads"] = threads
    evaluation = spec.evaluation
    if allow_large_strengths:
        evaluation = dataclasses.replace(evaluation, allow_large_strengths=True)
    if name:
        changes["name"] = name
    if output_dir:
        changes["output_dir"] = str(output_dir)
    if modes:
        parsed = parse_modes(tuple(m.strip() for m in modes.split(",")), "--modes")
        evaluation = dataclasses.replace(evaluation, modes=parsed)
    if evaluation != spec.evaluation:
        changes["evaluation"] = evaluation
    if backend is not None and backend not in BACKEND_KINDS:
        raise SpecError(f"--backend {backend!r}: expected one of {', '.join(BACKEND_KINDS)}")
    if engine is not None and engine not in ENGINES:
        raise SpecError(f'--engine {engine!r}: expected "fast" or "plain"')
    if backend or host or engine:
        changes["models"] = tuple(
            dataclasses.replace(
                m,
                backend=cast("BackendKind", backend or m.backend),  # checked against BACKEND_KINDS above
                host=host or m.host,
                engine=engine or m.engine,
            )
            for m in spec.models
        )
    return dataclasses.replace(spec, **changes)


def parse_spec(text: str, path: str = "<spec>") -> ExperimentSpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    reader = _Reader(path, text)
    spec = reader.build(ExperimentSpec, raw, "")
    if not spec.models:
        raise reader.fail("models", "expected at least one [[models]] table with a name")
    spec = dataclasses.replace(spec, path=path)
    try:
        spec.check_generation()
    except SpecError as error:
        field_name = str(error).split(": ")[1].split(".")[-1]
        raise reader.fail(f"generation.{field_name}", str(error).split(": ", 2)[2]) from None
    return spec


def load_spec(path: str | Path) -> ExperimentSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"{path}: cannot read the spec ({error.strerror})") from None
    return parse_spec(text, str(path))
