"""Every spec error, word for word: for a bad value of each field, the one line that
names the file, the line, the field and what was expected, whether it is caught while
reading the TOML (``load_spec``) or once the spec is whole (``validate``, which also sees
specs built in Python), and the layers checked against a model's depth (``check_layers``).
The messages are the interface: a change to the spec's rules keeps them as they are.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from remote_steer.errors import SpecError
from remote_steer.run import spec as spec_module
from remote_steer.run.spec import ExperimentSpec, Rule, apply_overrides, load_spec, validate

BASE = """name = "x"
seed = 1

[data]
concepts = ["a", "b"]

[[models]]
name = "m1"
dtype = "float32"

[evaluation]
strengths = [-1.0, 1.0]
layers = [1, 2]

[generation]
max_new_tokens = 8
"""
NO_MODEL = BASE.replace('[[models]]\nname = "m1"\ndtype = "float32"\n', "")


def sub(old: str, new: str) -> str:
    return BASE.replace(old, new, 1)


# (case, the spec's text, the message after the file's path)
BAD = [
    (
        "unknown_at_the_end_is_in_the_last_table",
        BASE + "\nbogus = 1\n",
        ":18: generation.bogus: unknown field Expected one of: layers, layer_fractions, "
        "best_layers, strengths, max_new_tokens, answer_tokens, batch_size, thinking, models, "
        "concepts",
    ),
    (
        "unknown_close",
        sub("seed = 1", "sed = 1"),
        ":2: sed: unknown field; did you mean 'seed'? Expected one of: name, seed, output_dir, "
        "data, models, extraction, evaluation, generation, controls, threads",
    ),
    (
        "unknown_section_field",
        sub("max_new_tokens = 8", "max_new_token = 8"),
        ":16: generation.max_new_token: unknown field; did you mean 'max_new_tokens'? Expected one "
        "of: layers, layer_fractions, best_layers, strengths, max_new_tokens, answer_tokens, "
        "batch_size, thinking, models, concepts",
    ),
    (
        "missing_name",
        sub('name = "x"', ""),
        ": spec: missing required field name",
    ),
    (
        "missing_model_name",
        sub('name = "m1"', 'device = "cpu"'),
        ":7: models[0]: missing required field name",
    ),
    (
        "no_models",
        NO_MODEL,
        ": models: expected at least one [[models]] table with a name",
    ),
    (
        "models_not_list",
        NO_MODEL.replace("seed = 1", "seed = 1\nmodels = 3"),
        ":3: models: expected one or more [[models]] tables",
    ),
    (
        "models_empty",
        NO_MODEL.replace("seed = 1", "seed = 1\nmodels = []"),
        ":3: models: expected one or more [[models]] tables",
    ),
    (
        "model_not_table",
        NO_MODEL.replace("seed = 1", "seed = 1\nmodels = [3]"),
        ":3: models[0]: expected a table, got int",
    ),
    (
        "section_not_table",
        sub("seed = 1", "seed = 1\ncontrols = 3"),
        ":3: controls: expected a table, got int",
    ),
    (
        "dtype_bad",
        sub('dtype = "float32"', 'dtype = "f8"'),
        ":9: models[0].dtype: 'f8' is not one of auto, float32, float16, bfloat16",
    ),
    (
        "dtype_int",
        sub('dtype = "float32"', "dtype = 5"),
        ":9: models[0].dtype: 5 is not one of auto, float32, float16, bfloat16",
    ),
    (
        "backend_bad",
        sub('dtype = "float32"', 'backend = "bogus"'),
        ":9: models[0].backend: 'bogus' is not one of local, simulated-remote, remote",
    ),
    (
        "engine_bad",
        sub('dtype = "float32"', 'engine = "turbo"'),
        ":9: models[0].engine: 'turbo' is not one of fast, plain",
    ),
    (
        "positions_bad",
        sub("layers = [1, 2]", 'layers = [1, 2]\npositions = "some"'),
        ":14: evaluation.positions: 'some' is not one of assistant, all",
    ),
    (
        "unit_bad",
        sub("layers = [1, 2]", 'layers = [1, 2]\nstrength_unit = "x"'),
        ":14: evaluation.strength_unit: 'x' is not one of raw, residual",
    ),
    (
        "label_both",
        sub('dtype = "float32"', 'label = "a"\ndisplay_name = "b"'),
        ":9: models[0].label: give label or display_name, not both",
    ),
    (
        "label_int",
        sub('dtype = "float32"', "label = 3"),
        ": models[0].display_name: expected a string, got 3",
    ),
    (
        "files_not_table",
        sub('concepts = ["a", "b"]', 'concepts = ["a", "b"]\nfiles = 3'),
        ":6: data.files: expected a table of concept = [paths]",
    ),
    (
        "files_bad",
        sub('concepts = ["a", "b"]', 'concepts = ["a", "b"]\nfiles = {a = []}'),
        ": data.files.a: expected a string or a non-empty list of strings",
    ),
    (
        "concepts_int",
        sub('concepts = ["a", "b"]', "concepts = 3"),
        ":5: data.concepts: expected a string or a non-empty list of strings",
    ),
    (
        "concepts_empty",
        sub('concepts = ["a", "b"]', "concepts = []"),
        ":5: data.concepts: expected a string or a non-empty list of strings",
    ),
    (
        "flip_int",
        sub('concepts = ["a", "b"]', 'concepts = ["a", "b"]\nflip = [1]'),
        ":6: data.flip: expected a string or a non-empty list of strings",
    ),
    (
        "genmodels_int",
        sub("max_new_tokens = 8", "models = 5"),
        ":7: generation.models: expected a string or a non-empty list of strings",
    ),
    (
        "lf_bad",
        sub("max_new_tokens = 8", "layer_fractions = [1.5]"),
        ":16: generation.layer_fractions: expected a non-empty list of depth fractions in [0, 1], e.g. [0.4, 0.6]",
    ),
    (
        "lf_empty",
        sub("max_new_tokens = 8", "layer_fractions = []"),
        ":16: generation.layer_fractions: expected a non-empty list of depth fractions in [0, 1], e.g. [0.4, 0.6]",
    ),
    (
        "lf_bool",
        sub("max_new_tokens = 8", "layer_fractions = [true]"),
        ":16: generation.layer_fractions: expected a non-empty list of depth fractions in [0, 1], e.g. [0.4, 0.6]",
    ),
    (
        "strengths_str",
        sub("strengths = [-1.0, 1.0]", 'strengths = "x"'),
        ":12: evaluation.strengths: expected a non-empty list of numbers, e.g. [-1.0, 1.0]",
    ),
    (
        "strengths_empty",
        sub("strengths = [-1.0, 1.0]", "strengths = []"),
        ":12: evaluation.strengths: expected a non-empty list of numbers, e.g. [-1.0, 1.0]",
    ),
    (
        "mstrengths_bad",
        sub('dtype = "float32"', 'strengths = ["a"]'),
        ":9: models[0].strengths: expected a non-empty list of numbers, e.g. [-1.0, 1.0]",
    ),
    (
        "layers_float",
        sub("layers = [1, 2]", "layers = [1.5]"),
        ":13: evaluation.layers: expected a non-empty list of layer indices, e.g. [4, 5, 6]",
    ),
    (
        "mlayers_bad",
        sub('dtype = "float32"', "layers = []"),
        ":9: models[0].layers: expected a non-empty list of layer indices, e.g. [4, 5, 6]",
    ),
    (
        "glayers_bad",
        sub("max_new_tokens = 8", 'layers = "x"'),
        ":13: generation.layers: expected a non-empty list of layer indices, e.g. [4, 5, 6]",
    ),
    (
        "modes_bad",
        sub("layers = [1, 2]", 'layers = [1, 2]\nmodes = ["logits"]'),
        ':14: evaluation.modes: unknown mode \'logits\'; expected "logit" and/or "generation"',
    ),
    (
        "modes_int",
        sub("layers = [1, 2]", "layers = [1, 2]\nmodes = 3"),
        ":14: evaluation.modes: expected a string or a non-empty list of strings",
    ),
    (
        "ablation_bad",
        sub("layers = [1, 2]", "layers = [1, 2]\nablation = 1"),
        ":14: evaluation.ablation: expected true or false, got 1",
    ),
    (
        "layer_window_bad",
        sub("layers = [1, 2]", 'layers = [1, 2]\nlayer_window = "guess"'),
        ":14: evaluation.layer_window: 'guess' is not one of all, predicted",
    ),
    (
        "thinking_bad",
        sub("max_new_tokens = 8", 'thinking = "yes"'),
        ":16: generation.thinking: expected true or false, got 'yes'",
    ),
    (
        "controls_neg",
        BASE + "\n[controls]\nrandom = -1\n",
        ":19: controls.random: expected a whole number ≥ 0 (how many vectors), got -1",
    ),
    (
        "controls_bool",
        BASE + "\n[controls]\nshuffled = true\n",
        ":19: controls.shuffled: expected a whole number ≥ 0 (how many vectors), got True",
    ),
    (
        "controls_unknown",
        BASE + "\n[controls]\nrandm = 1\n",
        ":19: controls.randm: unknown field; did you mean 'random'? Expected one of: random, shuffled, bootstrap",
    ),
    (
        "seed_neg",
        sub("seed = 1", "seed = -1"),
        ":2: seed: expected a positive integer, got -1",
    ),
    (
        "seed_bool",
        sub("seed = 1", "seed = true"),
        ":2: seed: expected a positive integer, got True",
    ),
    (
        "max_items_0",
        sub('concepts = ["a", "b"]', 'concepts = ["a", "b"]\nmax_items = 0'),
        ":6: data.max_items: expected a positive integer, got 0",
    ),
    (
        "batch_bad",
        sub("layers = [1, 2]", "layers = [1, 2]\nbatch_size = 0"),
        ":14: evaluation.batch_size: expected a positive integer, got 0",
    ),
    (
        "chunk_bad",
        sub("layers = [1, 2]", 'layers = [1, 2]\nchunk_items = "3"'),
        ":14: evaluation.chunk_items: expected a positive integer, got '3'",
    ),
    (
        "budget_bad",
        sub("layers = [1, 2]", "layers = [1, 2]\nrequest_token_budget = 1.5"),
        ":14: evaluation.request_token_budget: expected a positive integer, got 1.5",
    ),
    (
        "answer_tokens_bad",
        sub("max_new_tokens = 8", "answer_tokens = 0"),
        ":16: generation.answer_tokens: expected a positive integer, got 0",
    ),
    (
        "best_layers_bad",
        sub("max_new_tokens = 8", "best_layers = 0"),
        ":16: generation.best_layers: expected a positive integer, got 0",
    ),
    (
        "ext_batch_bad",
        BASE + "\n[extraction]\nbatch_size = -2\n",
        ":19: extraction.batch_size: expected a positive integer, got -2",
    ),
    (
        "tf_0",
        sub('concepts = ["a", "b"]', 'concepts = ["a", "b"]\ntest_fraction = 0'),
        ":6: data.test_fraction: expected a number in (0, 1), got 0",
    ),
    (
        "tf_1",
        sub('concepts = ["a", "b"]', 'concepts = ["a", "b"]\ntest_fraction = 1'),
        ":6: data.test_fraction: expected a number in (0, 1), got 1",
    ),
    (
        "tf_str",
        sub('concepts = ["a", "b"]', 'concepts = ["a", "b"]\ntest_fraction = "h"'),
        ":6: data.test_fraction: expected a number in (0, 1), got 'h'",
    ),
    (
        "lsf_1",
        sub("layers = [1, 2]", "layer_start_fraction = 1.0"),
        ":13: evaluation.layer_start_fraction: expected a number in [0, 1), got 1.0",
    ),
    (
        "name_int",
        sub('name = "x"', "name = 3"),
        ":1: name: expected a string, got 3",
    ),
    (
        "source_int",
        sub('concepts = ["a", "b"]', 'concepts = ["a", "b"]\nsource = 3'),
        ":6: data.source: expected a string, got 3",
    ),
    (
        "host_int",
        sub('dtype = "float32"', "host = 3"),
        ":9: models[0].host: expected a string, got 3",
    ),
    (
        "gen_models_unknown",
        sub("max_new_tokens = 8", 'models = ["zz"]'),
        ":7: generation.models: 'zz' is not a [[models]] name; expected one of m1",
    ),
    (
        "gen_concepts_unknown",
        sub("max_new_tokens = 8", 'concepts = ["zz"]'),
        ":5: generation.concepts: 'zz' is not in data.concepts; expected one of a, b",
    ),
    (
        "gen_two_layers",
        sub("max_new_tokens = 8", "layers = [1]\nbest_layers = 2"),
        ":17: generation.best_layers: give one of generation.layers, layer_fractions, best_layers",
    ),
    (
        "gen_two_layers2",
        sub("max_new_tokens = 8", "layer_fractions = [0.5]\nlayers = [1]"),
        ":16: generation.layer_fractions: give one of generation.layers, layer_fractions, best_layers",
    ),
    (
        "gen_best_no_logit",
        sub("max_new_tokens = 8", "best_layers = 2").replace(
            "layers = [1, 2]\n", 'layers = [1, 2]\nmodes = ["generation"]\n', 1
        ),
        ':17: generation.best_layers: needs the logit sweep; expected evaluation.modes to include "logit"',
    ),
    (
        "not_toml",
        "name = \n",
        ": not valid TOML: Invalid value (at line 1, column 8)",
    ),
    (
        "v_strength_zero",
        sub("strengths = [-1.0, 1.0]", "strengths = [0.0]"),
        ":12: evaluation.strengths: only 0 (the unsteered baseline, computed anyway); expected "
        "non-zero strengths, e.g. [-1.0, 1.0]",
    ),
    (
        "v_strength_neg",
        sub("strengths = [-1.0, 1.0]", "strengths = [-1.0, -2.0]"),
        ":12: evaluation.strengths: no positive strength; expected at least one (the best layer is "
        "picked at the strongest positive strength), e.g. [-1.0, 1.0]",
    ),
    (
        "v_strength_twice",
        sub("strengths = [-1.0, 1.0]", "strengths = [1.0, 1.0]"),
        ":12: evaluation.strengths: 1 is listed twice; expected each strength once",
    ),
    (
        "v_strength_nan",
        sub("strengths = [-1.0, 1.0]", "strengths = [nan, 1.0]"),
        ":12: evaluation.strengths: nan is not a finite number; expected numbers, e.g. [-1.0, 1.0]",
    ),
    (
        "v_mstrength_twice",
        sub('dtype = "float32"', "strengths = [2.0, 2.0]"),
        ":9: models[0].strengths: 2 is listed twice; expected each strength once",
    ),
    (
        "v_gstrength_twice",
        sub("max_new_tokens = 8", "strengths = [2.0, 2.0]").replace(
            "layers = [1, 2]\n", 'layers = [1, 2]\nmodes = ["logit", "generation"]\n', 1
        ),
        ":17: generation.strengths: 2 is listed twice; expected each strength once",
    ),
    (
        "v_gstrength_zero",
        sub("max_new_tokens = 8", "strengths = [0.0]").replace(
            "layers = [1, 2]\n", 'layers = [1, 2]\nmodes = ["logit", "generation"]\n', 1
        ),
        ":17: generation.strengths: only 0 (the unsteered baseline, computed anyway); expected "
        "non-zero strengths, e.g. [-1.0, 1.0]",
    ),
    (
        "v_layers_neg",
        sub("layers = [1, 2]", "layers = [-1, 2]"),
        ":13: evaluation.layers: layer -1 is negative; expected decoder-layer indices from 0",
    ),
    (
        "v_glayers_neg",
        sub("max_new_tokens = 8", "layers = [-3]"),
        ":16: generation.layers: layer -3 is negative; expected decoder-layer indices from 0",
    ),
    (
        "v_mlayers_neg",
        sub('dtype = "float32"', "layers = [-2]"),
        ":9: models[0].layers: layer -2 is negative",
    ),
    (
        "v_flip",
        sub('concepts = ["a", "b"]', 'concepts = ["a", "b"]\nflip = ["c"]'),
        ":6: data.flip: 'c' is not among data.concepts (a, b)",
    ),
    (
        "v_labels",
        BASE.replace("[evaluation]", '[[models]]\nname = "m1"\n\n[evaluation]'),
        ": models: two entries are named 'm1'; expected distinct names (set label to tell them apart)",
    ),
    (
        "v_labels2",
        BASE.replace("[evaluation]", '[[models]]\nname = "./x/m1"\n\n[evaluation]').replace(
            'name = "m1"', 'name = "m1"\nlabel = "m1"'
        ),
        ": models: two entries are named 'm1'; expected distinct names (set label to tell them apart)",
    ),
    (
        "v_model2_strengths",
        BASE.replace("[evaluation]", '[[models]]\nname = "m2"\nstrengths = [3.0, 3.0]\n\n[evaluation]'),
        ":13: models[1].strengths: 3 is listed twice; expected each strength once",
    ),
]


@pytest.mark.parametrize("case, text, expected", BAD, ids=[case for case, _, _ in BAD])
def test_each_bad_field_is_one_exact_line(tmp_path, case, text, expected):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as error:
        validate(load_spec(path))
    assert str(error.value) == f"{path}{expected}"


def _spec(tmp_path: Path) -> ExperimentSpec:
    path = tmp_path / "py.toml"
    path.write_text(BASE)
    return load_spec(path)


def _built(spec: ExperimentSpec, case: str) -> ExperimentSpec:
    """The spec with one bad value set in Python (the TOML reader never sees it)."""
    replace, ev, gen, model = dataclasses.replace, spec.evaluation, spec.generation, spec.models[0]
    return {
        "backend": lambda: replace(spec, models=(replace(model, backend="bogus"),)),
        "engine": lambda: replace(spec, models=(replace(model, engine="turbo"),)),
        "dtype": lambda: replace(spec, models=(replace(model, dtype="f3"),)),
        "modes": lambda: replace(spec, evaluation=replace(ev, modes=("logits",))),
        "modes_empty": lambda: replace(spec, evaluation=replace(ev, modes=())),
        "positions": lambda: replace(spec, evaluation=replace(ev, positions="x")),
        "unit": lambda: replace(spec, evaluation=replace(ev, strength_unit="x")),
        "gen_models": lambda: replace(spec, generation=replace(gen, models=("q",))),
        "gen_best": lambda: replace(
            spec, generation=replace(gen, best_layers=2), evaluation=replace(ev, modes=("generation",))
        ),
        "nopath": lambda: replace(spec, path=None, models=(replace(model, engine="turbo"),)),
        "nopath_gen": lambda: replace(spec, path=None, generation=replace(gen, models=("q",))),
        "nopath_labels": lambda: replace(spec, path=None, models=(model, model)),
    }[case]()


BUILT = [
    ("backend", "{path}: models[0].backend: 'bogus' is not one of local, simulated-remote, remote"),
    ("engine", "{path}: models[0].engine: 'turbo' is not one of fast, plain"),
    ("dtype", "{path}:9: models[0].dtype: 'f3' is not one of auto, float32, float16, bfloat16"),
    ("modes", '{path}: evaluation.modes: unknown mode \'logits\'; expected "logit" and/or "generation"'),
    ("modes_empty", '{path}: evaluation.modes: unknown mode \'\'; expected "logit" and/or "generation"'),
    ("positions", "{path}: evaluation.positions: 'x' is not one of assistant, all"),
    ("unit", "{path}: evaluation.strength_unit: 'x' is not one of raw, residual"),
    ("gen_models", "{path}: generation.models: 'q' is not a [[models]] name; expected one of m1"),
    ("gen_best", '{path}: generation.best_layers: needs the logit sweep; expected evaluation.modes to include "logit"'),
    ("nopath", "spec: models[0].engine: 'turbo' is not one of fast, plain"),
    ("nopath_gen", "spec: generation.models: 'q' is not a [[models]] name; expected one of m1"),
    (
        "nopath_labels",
        "spec: models: two entries are named 'm1'; expected distinct names (set label to tell them apart)",
    ),
]


@pytest.mark.parametrize("case, expected", BUILT, ids=[case for case, _ in BUILT])
def test_validate_names_the_field_of_a_spec_built_in_python(tmp_path, case, expected):
    spec = _spec(tmp_path)
    with pytest.raises(SpecError) as error:
        validate(_built(spec, case))
    assert str(error.value) == expected.format(path=spec.path)


def test_layers_outside_the_model_name_their_field(tmp_path):
    spec = _spec(tmp_path)
    replace = dataclasses.replace
    cases = [
        (spec, 2, "{path}:13: evaluation.layers: layer 2 is outside m1 (decoder layers 0..1)"),
        (spec, 1, "{path}:13: evaluation.layers: layer 1 is outside m1 (decoder layers 0..0)"),
        (
            replace(spec, models=(replace(spec.models[0], layers=(0, 9)),)),
            5,
            "{path}: models[0].layers: layer 9 is outside m1 (decoder layers 0..4)",
        ),
        (
            replace(spec, generation=replace(spec.generation, layers=(7,))),
            5,
            "{path}: generation.layers: layer 7 is outside m1 (decoder layers 0..4)",
        ),
    ]
    for built, n_layers, expected in cases:
        with pytest.raises(SpecError) as error:
            built.check_layers("m1", n_layers)
        assert str(error.value) == expected.format(path=spec.path)
    replace(spec, path=None).check_layers("m1", 5)


@pytest.mark.parametrize(
    "option, expected",
    [
        ({"backend": "x"}, "--backend 'x': expected one of local, simulated-remote, remote"),
        ({"engine": "x"}, '--engine \'x\': expected "fast" or "plain"'),
        ({"modes": "logit,gen"}, '--modes: unknown mode \'gen\'; expected "logit" and/or "generation"'),
    ],
)
def test_a_bad_override_names_its_flag(tmp_path, option, expected):
    with pytest.raises(SpecError) as error:
        apply_overrides(_spec(tmp_path), **option)
    assert str(error.value) == expected


@pytest.mark.parametrize(
    "cls",
    [
        ExperimentSpec,
        spec_module.DataSpec,
        spec_module.ModelSpec,
        spec_module.ExtractionSpec,
        spec_module.EvaluationSpec,
        spec_module.GenerationSpec,
        spec_module.ControlsSpec,
    ],
)
def test_every_spec_field_carries_its_rule(cls):
    """The reader and the validator know a field only by its rule (``metadata=``)."""
    for fld in dataclasses.fields(cls):
        if fld.name != "path":  # where the spec was read from, not a TOML field
            assert isinstance(fld.metadata.get("rule"), Rule), f"{cls.__name__}.{fld.name} has no rule"


def test_the_spec_and_the_vectors_know_the_same_strength_units():
    """``vectors.py`` imports torch, which the spec does not: the two lists are kept equal here."""
    from remote_steer.vectors import UNITS

    assert spec_module.STRENGTH_UNITS == UNITS
