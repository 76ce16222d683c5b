"""Experiment specs: TOML files, read strictly.

Every field is known; a misspelt one is an error that names the file, line and
field and suggests the closest known name. See README "Spec format".

Each field carries its rule beside its definition (``metadata=`` one of the rules
below): how its TOML value is read, and what is checked once the spec is whole.
A rule raises ``FieldError`` (the dotted field and what was expected); the one
``FieldError.spec_error`` turns it into the ``file:line: field: message`` line.

Adding a field is one line in its dataclass, naming its rule:

    threads: int | None = field(default=None, metadata=POSITIVE)  # what it is for

Use a shared rule (TEXT, FLAG, STRINGS, POSITIVE, COUNT, LAYERS, STRENGTHS, ...,
``one_of(CHOICES)`` with the choices as one constant here) or ``rule(read, check)``:
``read(value, key)`` returns the TOML value typed or raises ``FieldError(key, ...)``;
the optional ``check(value, key, spec)`` runs in ``validate`` with the whole spec (a
flag that relaxes another field's check is read there). The reader, the validator
and the unknown-field hint pick the field up; tests/test_spec_rules.py lists the
messages. A check across several fields that cites no line goes beside
``_check_generation``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack, cast

from remote_steer.data.prompts import POSITIONS
from remote_steer.errors import SpecError
from remote_steer.remote.backend import BACKEND_KINDS, BackendKind

if TYPE_CHECKING:
    from remote_steer.data.prompts import SteerPositions

# The allowed values, one source each (the fields' rules, the validator and the
# command-line overrides all read these; POSITIONS and BACKEND_KINDS are their types' values).
DTYPES = ("auto", "float32", "float16", "bfloat16")
ENGINES = ("fast", "plain")
MODES = ("logit", "generation")
STRENGTH_UNITS = ("raw", "residual")
LAYER_WINDOWS = ("all", "predicted")


class FieldError(Exception):
    """A bad spec field: ``field`` as shown (``models[0].engine``) and ``message``
    (what was expected). ``cite_line``: whether the line is looked up when the
    spec is checked after reading (by ``validate``, ``check_layers``)."""

    def __init__(self, field: str, message: str, *, cite_line: bool = True) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.cite_line = field, message, cite_line

    def spec_error(self, path: str | None, text: str | None = None) -> SpecError:
        """The one-line error: where (from the spec's ``text`` while reading, else
        from the file at ``path``), the field and the message."""
        if text is not None:
            line = _line_of(text, self.field.split(".")[-1].split("[")[0])
            where = f"{path}:{line}" if line else str(path)
        elif self.cite_line:
            where = spec_location(path, re.sub(r"\[\d+\]", "", self.field))
        else:
            where = path or "spec"
        return SpecError(f"{where}: {self.field}: {self.message}")


Read = Callable[[Any, str], Any]  # (TOML value, dotted field) -> the field's value; raises FieldError
Check = Callable[[Any, str, "ExperimentSpec"], None]  # (value, dotted field, the whole spec); raises FieldError


@dataclass(frozen=True)
class Rule:
    """One field's rule: ``read`` converts its TOML value (while reading a file);
    ``check`` (optional) tests the typed value in the whole spec (``validate``,
    which also sees specs built in Python and command-line overrides)."""

    read: Read
    check: Check | None = None
    alias: str | None = None  # a second TOML spelling of the field (give one, not both)


def rule(read: Read, check: Check | None = None, *, alias: str | None = None) -> Mapping[str, Rule]:
    """A field's ``metadata``: ``field(default=..., metadata=rule(read, check))``."""
    return {"rule": Rule(read, check, alias)}


def _rule_of(fld: dataclasses.Field[Any]) -> Rule:
    return cast(Rule, fld.metadata["rule"])


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise FieldError(key, f"expected a string, got {value!r}")
    return value


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise FieldError(key, f"expected true or false, got {value!r}")
    return value


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise FieldError(key, "expected a string or a non-empty list of strings")
    return tuple(value)


def _whole(low: int, expected: str) -> Read:
    """A whole number ≥ ``low`` (not a bool)."""

    def read(value: Any, key: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise FieldError(key, f"expected {expected}, got {value!r}")
        return value

    return read


def _fraction(*, zero: bool) -> Read:
    """A number in [0, 1) (``zero``) or (0, 1)."""
    shown = "[0, 1)" if zero else "(0, 1)"

    def read(value: Any, key: str) -> float:
        if not isinstance(value, (int, float)) or not 0 <= value < 1 or (not zero and value == 0):
            raise FieldError(key, f"expected a number in {shown}, got {value!r}")
        return float(value)

    return read


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _fractions(value: Any, key: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(_is_fraction(v) for v in value):
        raise FieldError(key, "expected a non-empty list of depth fractions in [0, 1], e.g. [0.4, 0.6]")
    return tuple(float(v) for v in value)


def _numbers(value: Any, key: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, (int, float)) for v in value):
        raise FieldError(key, "expected a non-empty list of numbers, e.g. [-1.0, 1.0]")
    return tuple(float(v) for v in value)


def _indices(value: Any, key: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) for v in value):
        raise FieldError(key, "expected a non-empty list of layer indices, e.g. [4, 5, 6]")
    return tuple(value)


def _files(value: Any, key: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise FieldError(key, "expected a table of concept = [paths]")
    return {concept: _strings(paths, f"{key}.{concept}") for concept, paths in value.items()}


def one_of(choices: tuple[str, ...]) -> Mapping[str, Rule]:
    """One of ``choices``: checked when read and again in the whole spec."""

    def read(value: Any, key: str) -> Any:
        if value not in choices:
            raise FieldError(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def check(value: Any, key: str, spec: ExperimentSpec) -> None:
        read(value, key)

    return rule(read, check)


def either(choices: tuple[str, ...], joiner: str = "or") -> str:
    """``choices`` quoted for a message: ``"fast" or "plain"``."""
    return f" {joiner} ".join(f'"{choice}"' for choice in choices)


def _mode_problem(modes: tuple[str, ...]) -> str | None:
    """What is wrong with ``modes`` (None: nothing)."""
    bad = [m for m in modes if m not in MODES]
    if modes and not bad:
        return None
    return f"unknown mode {bad[0] if modes else ''!r}; expected {either(MODES, 'and/or')}"


def _check_modes(modes: Any, key: str, spec: ExperimentSpec | None = None) -> None:
    if (problem := _mode_problem(modes)) is not None:
        raise FieldError(key, problem)


def _read_modes(value: Any, key: str) -> tuple[str, ...]:
    modes = _strings(value, key)
    _check_modes(modes, key)
    return modes


def check_strengths(values: tuple[float, ...], key: str, *, need_positive: bool) -> None:
    """Strengths are finite numbers, each listed once; zero (the unsteered baseline,
    computed anyway) only beside others; with ``need_positive`` at least one is
    positive, since the best layer is picked at the strongest positive strength."""
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise FieldError(key, f"{value!r} is not a finite number; expected numbers, e.g. [-1.0, 1.0]")
    repeated = [v for v in dict.fromkeys(values) if values.count(v) > 1]
    if repeated:
        raise FieldError(key, f"{repeated[0]:g} is listed twice; expected each strength once")
    if all(v == 0 for v in values):
        raise FieldError(
            key, "only 0 (the unsteered baseline, computed anyway); expected non-zero strengths, e.g. [-1.0, 1.0]"
        )
    if need_positive and not any(v > 0 for v in values):
        raise FieldError(
            key,
            "no positive strength; expected at least one (the best layer is picked at the strongest "
            "positive strength), e.g. [-1.0, 1.0]",
        )


def _sweep_strengths(values: Any, key: str, spec: ExperimentSpec) -> None:
    """The sweep's strengths: one positive at least when the logit sweep runs."""
    if values is not None:
        check_strengths(values, key, need_positive="logit" in spec.evaluation.modes)


def _generation_strengths(values: Any, key: str, spec: ExperimentSpec) -> None:
    if values is not None and "generation" in spec.evaluation.modes:
        check_strengths(values, key, need_positive=False)


def _from_zero(suffix: str) -> Check:
    def check(layers: Any, key: str, spec: ExperimentSpec) -> None:
        for layer in layers or ():
            if layer < 0:
                raise FieldError(key, f"layer {layer} is negative{suffix}")

    return check


def _among_concepts(concepts: Any, key: str, spec: ExperimentSpec) -> None:
    for concept in concepts:
        if concept not in spec.data.concepts:
            raise FieldError(key, f"{concept!r} is not among data.concepts ({', '.join(spec.data.concepts)})")


def section(cls: type) -> Mapping[str, Rule]:
    """A ``[section]`` table read into ``cls``, whose fields carry their own rules."""
    return rule(lambda value, key: _build(cls, value, key), lambda value, key, spec: _check_fields(value, key, spec))


def _read_models(value: Any, key: str) -> tuple[ModelSpec, ...]:
    if not isinstance(value, list) or not value:
        raise FieldError(key, "expected one or more [[models]] tables")
    return tuple(_build(ModelSpec, entry, f"{key}[{index}]") for index, entry in enumerate(value))


def _check_models(models: Any, key: str, spec: ExperimentSpec) -> None:
    for index, model in enumerate(models):
        _check_fields(model, f"{key}[{index}]", spec)


# The rules fields share; a field names one as its ``metadata``.
TEXT = rule(_text)  # a string
FLAG = rule(_flag)  # true or false
STRINGS = rule(_strings)  # a string or a non-empty list of strings
POSITIVE = rule(_whole(1, "a positive integer"))  # a whole number ≥ 1
COUNT = rule(_whole(0, "a whole number ≥ 0 (how many vectors)"))
SEED = rule(_whole(0, "a positive integer"))  # a whole number ≥ 0 (its message as it has always been)
FRACTION_OPEN = rule(_fraction(zero=False))  # in (0, 1)
FRACTION_FROM_ZERO = rule(_fraction(zero=True))  # in [0, 1)
DEPTHS = rule(_fractions)  # a non-empty list of depth fractions in [0, 1]
LAYERS = rule(_indices, _from_zero("; expected decoder-layer indices from 0"))
MODEL_LAYERS = rule(_indices, _from_zero(""))
STRENGTHS = rule(_numbers, _sweep_strengths)
GENERATION_STRENGTHS = rule(_numbers, _generation_strengths)
MODE_LIST = rule(_read_modes, _check_modes)


@dataclass(frozen=True)
class DataSpec:
    # "fixtures", "hub", or a local directory laid out like upstream
    source: str = field(default="fixtures", metadata=TEXT)
    concepts: tuple[str, ...] = field(default=("corrigibility",), metadata=STRINGS)
    max_items: int | None = field(default=None, metadata=POSITIVE)  # per concept, after preprocessing (None: all)
    test_fraction: float = field(default=0.5, metadata=FRACTION_OPEN)
    # concept -> files override
    files: dict[str, tuple[str, ...]] = field(default_factory=dict, metadata=rule(_files))
    # concepts whose polarity is reversed (matching ↔ not matching)
    flip: tuple[str, ...] = field(default=(), metadata=rule(_strings, _among_concepts))


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
    name: str = field(metadata=TEXT)  # toy name, registry name, hub id or local path
    dtype: str = field(default="auto", metadata=one_of(DTYPES))
    # "cpu", "cuda", "cuda:N", or "auto" (device_map="auto" over all GPUs)
    device: str = field(default="cpu", metadata=TEXT)
    revision: str | None = field(default=None, metadata=TEXT)
    # "local", "remote" (NDIF) or "simulated-remote"
    backend: BackendKind = field(default="local", metadata=one_of(BACKEND_KINDS))
    # remote server URL; default $NDIF_HOST, then nnsight's configured host
    host: str | None = field(default=None, metadata=TEXT)
    # "fast" (prefix cache, shipped kernel via nnsight.register) or "plain" (nnsight only)
    engine: str = field(default="fast", metadata=one_of(ENGINES))
    # this model's sweep layers (default: evaluation.layers / the sweep)
    layers: tuple[int, ...] | None = field(default=None, metadata=MODEL_LAYERS)
    # this model's strengths (default: evaluation.strengths)
    strengths: tuple[float, ...] | None = field(default=None, metadata=STRENGTHS)
    # training label for grouping (default: the registry's, else "unknown")
    training: str | None = field(default=None, metadata=TEXT)
    # name in results, tables, the run directory and every --model (TOML: label or display_name;
    # default: the name, or a local checkpoint's directory name)
    display_name: str | None = field(default=None, metadata=rule(_text, alias="label"))

    @property
    def label(self) -> str:
        """The model's name in results (``display_name`` if set, else ``short_label``)."""
        return self.display_name or short_label(self.name)


@dataclass(frozen=True)
class ExtractionSpec:
    batch_size: int = field(default=16, metadata=POSITIVE)  # A/B pairs per forward pass (two rows each)


@dataclass(frozen=True)
class EvaluationSpec:
    strengths: tuple[float, ...] = field(default=(-1.0, 1.0), metadata=STRENGTHS)
    # explicit layers; None: from layer_start_fraction to the last
    layers: tuple[int, ...] | None = field(default=None, metadata=LAYERS)
    layer_start_fraction: float = field(default=0.33, metadata=FRACTION_FROM_ZERO)
    # "all" the sweep layers, or "predicted": per concept, only the window around the layer
    # its extraction's decodability predicts (run/predicted_window.py, docs/depth.md)
    layer_window: str = field(default="all", metadata=one_of(LAYER_WINDOWS))
    modes: tuple[str, ...] = field(default=("logit",), metadata=MODE_LIST)  # "logit" and/or "generation"
    # "assistant" (CAA convention) or "all"
    positions: SteerPositions = field(default="assistant", metadata=one_of(POSITIONS))
    batch_size: int = field(default=64, metadata=POSITIVE)  # rows (item × configuration) per forward pass
    # items per checkpointed results part and per request (resume granularity)
    chunk_items: int = field(default=16, metadata=POSITIVE)
    # max padded tokens (rows × width) in one request
    request_token_budget: int = field(default=2_000_000, metadata=POSITIVE)
    # "raw": s × the vector; "residual": s × the layer's mean residual norm, in the vector's direction
    strength_unit: str = field(default="raw", metadata=one_of(STRENGTH_UNITS))
    # run strengths whose vector exceeds 10× the residual norm (docs/rigour.md)
    allow_large_strengths: bool = field(default=False, metadata=FLAG)
    # after the sweep, each concept's direction projected out at every layer (docs/depth.md)
    ablation: bool = field(default=False, metadata=FLAG)
    # after every concept's sweep, each concept's vector on every other's items (docs/depth.md)
    side_effects: bool = field(default=False, metadata=FLAG)
    # after each concept's sweep, four extraction methods steered on its items (docs/depth.md)
    methods: bool = field(default=False, metadata=FLAG)


@dataclass(frozen=True)
class GenerationSpec:
    """Free-generation evaluation (``evaluation.modes`` includes "generation")."""

    # absolute layers; default: up to 4 layers spread over the sweep
    layers: tuple[int, ...] | None = field(default=None, metadata=LAYERS)
    # depth fractions: layer round(f × n_layers)
    layer_fractions: tuple[float, ...] | None = field(default=None, metadata=DEPTHS)
    # the k best layers of the model × concept's logit sweep
    best_layers: int | None = field(default=None, metadata=POSITIVE)
    # default: evaluation.strengths
    strengths: tuple[float, ...] | None = field(default=None, metadata=GENERATION_STRENGTHS)
    # room for a short chain of thought and the answer
    max_new_tokens: int = field(default=384, metadata=POSITIVE)
    # after </think>, tokens after which the answer counts as given
    answer_tokens: int = field(default=16, metadata=POSITIVE)
    batch_size: int = field(default=32, metadata=POSITIVE)  # rows (item × configuration) decoded together
    # None: on where the chat template supports it (Qwen3)
    thinking: bool | None = field(default=None, metadata=FLAG)
    # generate for these [[models]] names only (default all)
    models: tuple[str, ...] | None = field(default=None, metadata=STRINGS)
    concepts: tuple[str, ...] | None = field(default=None, metadata=STRINGS)  # and these data.concepts only

    def covers(self, model: str, concept: str) -> bool:
        """Whether generation runs for this model × concept."""
        return (self.models is None or model in self.models) and (self.concepts is None or concept in self.concepts)


@dataclass(frozen=True)
class ControlsSpec:
    """Opt-in rigour checks (docs/rigour.md). Each costs its count × the sweep's steered rows."""

    random: int = field(default=0, metadata=COUNT)  # random directions with the vector's norm, per layer
    # CAA vectors from shuffled labels (matching letter permuted in the training set)
    shuffled: int = field(default=0, metadata=COUNT)
    # CAA vectors from bootstrap resamples of the training items (vector uncertainty)
    bootstrap: int = field(default=0, metadata=COUNT)

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
    name: str = field(metadata=TEXT)
    seed: int = field(default=0, metadata=SEED)
    output_dir: str = field(default="outputs", metadata=TEXT)
    data: DataSpec = field(default_factory=DataSpec, metadata=section(DataSpec))
    models: tuple[ModelSpec, ...] = field(default=(), metadata=rule(_read_models, _check_models))
    extraction: ExtractionSpec = field(default_factory=ExtractionSpec, metadata=section(ExtractionSpec))
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec, metadata=section(EvaluationSpec))
    generation: GenerationSpec = field(default_factory=GenerationSpec, metadata=section(GenerationSpec))
    controls: ControlsSpec = field(default_factory=ControlsSpec, metadata=section(ControlsSpec))
    # local runs: torch's CPU threads (default: the CPUs free; env vars win)
    threads: int | None = field(default=None, metadata=POSITIVE)
    path: str | None = field(default=None, compare=False)  # where it was read from (not a TOML field)

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

    def check_layers(self, model: str, n_layers: int) -> None:
        """Every layer the spec gives for ``model`` is one of its ``n_layers`` decoder layers."""
        given = [(f"models[{i}].layers", m.layers, False) for i, m in enumerate(self.models) if m.name == model]
        given += [
            ("generation.layers", self.generation.layers, True),
            ("evaluation.layers", self.evaluation.layers, True),
        ]
        for key, layers, cite_line in given:
            for layer in layers or ():
                if not 0 <= layer < n_layers:
                    message = f"layer {layer} is outside {model} (decoder layers 0..{n_layers - 1})"
                    raise FieldError(key, message, cite_line=cite_line).spec_error(self.path)


def _check_generation(spec: ExperimentSpec) -> None:
    """Generation subsets name known models and concepts; one way of giving layers
    (fields that depend on others: cited without a line)."""
    gen = spec.generation
    names = [m.name for m in spec.models]
    for model in gen.models or ():
        if model not in names:
            message = f"{model!r} is not a [[models]] name; expected one of {', '.join(names)}"
            raise FieldError("generation.models", message, cite_line=False)
    for concept in gen.concepts or ():
        if concept not in spec.data.concepts:
            message = f"{concept!r} is not in data.concepts; expected one of {', '.join(spec.data.concepts)}"
            raise FieldError("generation.concepts", message, cite_line=False)
    given = [k for k in ("layers", "layer_fractions", "best_layers") if getattr(gen, k) is not None]
    if len(given) > 1:
        message = "give one of generation.layers, layer_fractions, best_layers"
        raise FieldError(f"generation.{given[1]}", message, cite_line=False)
    if gen.best_layers is not None and "generation" in spec.evaluation.modes and "logit" not in spec.evaluation.modes:
        message = 'needs the logit sweep; expected evaluation.modes to include "logit"'
        raise FieldError("generation.best_layers", message, cite_line=False)


def _check_labels(spec: ExperimentSpec) -> None:
    labels = [m.label for m in spec.models]
    for label in labels:
        if labels.count(label) > 1:
            message = f"two entries are named {label!r}; expected distinct names (set label to tell them apart)"
            raise FieldError("models", message, cite_line=False)


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


def _spec_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """A spec class's TOML fields by name (``path`` is where it was read from, not a field)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}


def _unalias(known: dict[str, dataclasses.Field[Any]], values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``values`` with each field's second spelling (its rule's ``alias``) under its own name."""
    for name, fld in known.items():
        alias = _rule_of(fld).alias
        if alias is not None and alias in values:
            if name in values:
                raise FieldError(f"{prefix}.{alias}", f"give {alias} or {name}, not both")
            values = {(name if k == alias else k): v for k, v in values.items()}
    return values


def _build(cls: type, values: Any, prefix: str) -> Any:
    """``cls`` from a TOML table, each value read by its field's rule."""
    if not isinstance(values, dict):
        raise FieldError(prefix, f"expected a table, got {type(values).__name__}")
    known = _spec_fields(cls)
    kwargs: dict[str, Any] = {}
    for key, value in _unalias(known, values, prefix).items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FieldError(dotted, f"unknown field{hint} Expected one of: {', '.join(known)}")
        kwargs[key] = _rule_of(known[key]).read(value, dotted)
    missing = [name for name, f in known.items() if name not in kwargs and _required(f)]
    if missing:
        raise FieldError(prefix or "spec", f"missing required field {', '.join(missing)}")
    return cls(**kwargs)


def _required(fld: dataclasses.Field[Any]) -> bool:
    return fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING


def _check_fields(spec_part: Any, prefix: str, spec: ExperimentSpec) -> None:
    """Each field's ``check`` on its typed value, in the order the fields are declared."""
    for name, fld in _spec_fields(type(spec_part)).items():
        check = _rule_of(fld).check
        if check is not None:
            check(getattr(spec_part, name), f"{prefix}.{name}" if prefix else name, spec)


def validate(spec: ExperimentSpec) -> None:
    """Every check that needs no data file, model or network, for ``plan`` and ``run``
    alike: both call it before anything is written or computed. Command-line overrides
    are checked by ``apply_overrides`` (naming the flag) before they reach here."""
    try:
        _check_fields(spec, "", spec)
        _check_generation(spec)
        _check_labels(spec)
    except FieldError as error:
        raise error.spec_error(spec.path) from None


def parse_modes(modes: tuple[str, ...], where: str) -> tuple[str, ...]:
    """``modes`` if each is known, else a ``SpecError`` starting with ``where`` (a flag, an argument)."""
    if (problem := _mode_problem(modes)) is not None:
        raise SpecError(f"{where}: {problem}")
    return modes


class Overrides(TypedDict, total=False):
    """``run``'s command-line options that change the spec (None/False: not given)."""

    name: str | None
    output_dir: str | None
    modes: str | None
    backend: str | None
    host: str | None
    engine: str | None
    threads: int | None
    allow_large_strengths: bool


def apply_overrides(spec: ExperimentSpec, **options: Unpack[Overrides]) -> ExperimentSpec:
    """The spec with ``run``'s command-line options applied; a bad value names its flag."""
    changes: dict[str, Any] = {}
    threads, backend, engine = options.get("threads"), options.get("backend"), options.get("engine")
    host, modes = options.get("host"), options.get("modes")
    if threads is not None:
        if threads < 1:
            raise SpecError(f"--threads {threads}: expected a positive integer")
        changes["threads"] = threads
    evaluation = spec.evaluation
    if options.get("allow_large_strengths"):
        evaluation = dataclasses.replace(evaluation, allow_large_strengths=True)
    if name := options.get("name"):
        changes["name"] = name
    if output_dir := options.get("output_dir"):
        changes["output_dir"] = str(output_dir)
    if modes:
        parsed = parse_modes(tuple(m.strip() for m in modes.split(",")), "--modes")
        evaluation = dataclasses.replace(evaluation, modes=parsed)
    if evaluation != spec.evaluation:
        changes["evaluation"] = evaluation
    if backend is not None and backend not in BACKEND_KINDS:
        raise SpecError(f"--backend {backend!r}: expected one of {', '.join(BACKEND_KINDS)}")
    if engine is not None and engine not in ENGINES:
        raise SpecError(f"--engine {engine!r}: expected {either(ENGINES)}")
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
    try:
        spec = _build(ExperimentSpec, raw, "")
        if not spec.models:
            raise FieldError("models", "expected at least one [[models]] table with a name")
        spec = dataclasses.replace(spec, path=path)
        _check_generation(spec)
    except FieldError as error:
        raise error.spec_error(path, text) from None
    return spec


def load_spec(path: str | Path) -> ExperimentSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"{path}: cannot read the spec ({error.strerror})") from None
    return parse_spec(text, str(path))
