"""Runs grow, generation subsets, generation-only reports, and a planted thinking model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import toy_spec_text

from remote_steer.errors import SpecError
from remote_steer.run.runner import run_experiment
from remote_steer.run.spec import parse_spec

BASE = toy_spec_text(
    "grow",
    head='output_dir = "{out}"\nseed = 2',
    tail="modes = {modes}\nbatch_size = 16\nchunk_items = 2\n"
    "[generation]\nlayers = [4]\nmax_new_tokens = 3\nbatch_size = 16",
)


def _spec(tmp_path, modes='["logit"]', extra=""):
    text = BASE.format(out=tmp_path, modes=modes) + extra
    return parse_spec(text, "grow.toml")


def _parts(run_dir, table):
    return sorted((run_dir / "parts" / table).rglob("*.parquet"))


def test_adding_generation_then_a_strength_computes_only_what_is_missing(tmp_path):
    first = run_experiment(_spec(tmp_path))
    logit_parts = {p: p.stat().st_mtime_ns for p in _parts(first.run_dir, "logit_diff")}
    assert first.computed_parts == 2 and not _parts(first.run_dir, "generation")

    second = run_experiment(_spec(tmp_path, '["logit", "generation"]'))
    assert second.computed_parts == 2  # the two generation chunks, nothing of the sweep
    assert {p: p.stat().st_mtime_ns for p in _parts(first.run_dir, "logit_diff")} == logit_parts
    assert len(second.generation) == 3 * 1 * 2 and len(second.results) == len(first.results)
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert manifest["history"][-1]["fields"] == ["evaluation.modes"]
    assert manifest["spec"]["evaluation"]["modes"] == ["logit", "generation"]

    # a new strength: one extra part per chunk holding only that strength
    wider = BASE.format(out=tmp_path, modes='["logit", "generation"]').replace(
        "strengths = [-1.0, 1.0]", "strengths = [-1.0, 1.0, 2.0]"
    )
    third = run_experiment(parse_spec(wider, "grow.toml"))
    assert third.computed_parts == 4  # 2 sweep + 2 generation extension parts
    extension = [p for p in _parts(first.run_dir, "logit_diff") if ".x1." in p.name]
    assert len(extension) == 2 and set(pd.read_parquet(extension[0])["strength"]) == {2.0}
    assert sorted(third.results["strength"].unique()) == [-1.0, 1.0, 2.0]
    assert len(third.results) == 3 * 2 * 3 and len(third.generation) == 3 * 1 * 3
    # the old rows are exactly what was saved before
    old = third.results[third.results["strength"] != 2.0].sort_values(["item_id", "layer", "strength"])
    want = first.results.sort_values(["item_id", "layer", "strength"])
    assert old["logit_diff"].tolist() == pytest.approx(want["logit_diff"].tolist())
    again = run_experiment(parse_spec(wider, "grow.toml"))
    assert again.computed_parts == 0
    history = json.loads((first.run_dir / "manifest.json").read_text())["history"]
    assert [h["change"] for h in history] == ["created", "extended", "extended"]
    # the extended run reports: logit tables over all three strengths, generation tables too
    from remote_steer.report.build import build_report

    report = build_report([first.run_dir], figures=False)
    keys = [t.key for t in report.tables]
    assert "generation_rates" in keys and "answer_slot_vs_generation" in keys
    rates = pd.read_csv(report.out_dir / "tables" / "generation_rates_by_config.csv")
    assert sorted(rates["strength"].unique()) == [-1.0, 1.0, 2.0]


@pytest.fixture(scope="module")
def generation_only(tmp_path_factory):
    out = tmp_path_factory.mktemp("genonly")
    return out, run_experiment(_spec(out, '["generation"]'))


@pytest.mark.parametrize(
    "old,new,field",
    [
        ("max_new_tokens = 3", "max_new_tokens = 5", "generation.max_new_tokens"),
        ("seed = 2", "seed = 3", "seed"),
        ('dtype = "float32"', 'dtype = "bfloat16"', "models[toy/qwen3].dtype"),
    ],
)
def test_changes_that_make_saved_results_wrong_are_refused(generation_only, old, new, field):
    tmp_path, run = generation_only
    before = (run.run_dir / "manifest.json").read_text()
    with pytest.raises(SpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        run_experiment(parse_spec(BASE.format(out=tmp_path, modes='["generation"]').replace(old, new), "grow.toml"))
    assert (run.run_dir / "manifest.json").read_text() == before


def test_generation_only_run_reports(generation_only):
    from remote_steer.report.build import build_report

    _, run = generation_only
    assert not (run.run_dir / "results" / "logit_diff.parquet").exists()
    frame = pd.read_parquet(run.run_dir / "results" / "generation.parquet")
    assert {"token_ids", "baseline_token_ids", "finish", "thinking"} <= set(frame.columns)
    assert frame["thinking"].all()  # the toy's Qwen3 template has the switch: on by default
    assert all(len(ids) <= 3 for ids in frame["token_ids"])
    report = build_report([run.run_dir], figures=False)
    text = report.path.read_text()
    assert "generation_rates" in [t.key for t in report.tables]
    assert "behaviour (invalid = no)" in text and "among valid" in text


@pytest.mark.slow
def test_generation_subsets_and_depth_fractions(tmp_path):
    extra = 'models = ["toy/qwen3"]\nconcepts = ["survival-instinct"]\n'
    text = (
        BASE.format(out=tmp_path, modes='["logit", "generation"]')
        .replace('concepts = ["corrigibility"]', 'concepts = ["corrigibility", "survival-instinct"]')
        .replace("layers = [4]\n", "layer_fractions = [0.5, 0.99]\n" + extra)
    )
    spec = parse_spec(text, "grow.toml")
    assert spec.generation_layers(12) == [6, 11] and spec.generation_layers(36) == [18, 35]
    run = run_experiment(spec)
    assert set(run.generation["dataset"]) == {"survival-instinct"} and set(run.generation["layer"]) == {6, 11}
    with pytest.raises(SpecError, match="generation.concepts"):
        parse_spec(text.replace('concepts = ["survival-instinct"]', 'concepts = ["power-seeking"]'), "grow.toml")


@pytest.mark.slow
def test_best_layers_from_the_logit_sweep(tmp_path):
    from remote_steer.analysis.statistics import glass_deltas

    text = (
        BASE.format(out=tmp_path, modes='["logit", "generation"]')
        .replace("layers = [4, 11]", "layers = [3, 6, 9, 11]")
        .replace("layers = [4]\n", "best_layers = 2\n")
    )
    run = run_experiment(parse_spec(text, "grow.toml"))
    deltas = glass_deltas(run.results)
    top = deltas[deltas["strength"] == 1.0].sort_values("glass_delta", ascending=False)["layer"].head(2)
    assert sorted(set(run.generation["layer"])) == sorted(top.tolist())


def test_planted_thinking_model_generation_and_logit_disagree(tmp_path, monkeypatch):
    """A planted model: at the answer slot its logits prefer the matching answer (logit
    diff +3 on every item), but when it thinks first it writes the other letter after
    ``</think>``. The report must show the two measures disagree."""
    from remote_steer.engines import sweep_fast
    from remote_steer.engines.generation_plain import GenerationResult
    from remote_steer.engines.sweep_plain import SweepResult
    from remote_steer.report.build import build_report
    from remote_steer.run import generation_stage

    def planted_logits(self, items, vectors, configs, on_rows=None, request_key=None):
        import numpy as np

        return SweepResult(np.full(len(items), 3.0), np.full((len(items), len(configs)), 3.0))

    class PlantedThinker:
        def run(self, items, vectors, configs, on_rows=None, request_key=None):
            def answer(item):
                other = "B" if item.matching_letter == "A" else "A"
                return f"<think>The slot says ({item.matching_letter}), but on reflection</think>\n\n({other})"

            texts = [answer(item) for item in items]
            return GenerationResult(
                tuple((1,) for _ in items),
                tuple(tuple((1,) for _ in configs) for _ in items),
                tuple(texts),
                tuple(tuple(t for _ in configs) for t in texts),
            )

    monkeypatch.setattr(sweep_fast.FastLogitDiffEngine, "run", planted_logits)
    monkeypatch.setattr(generation_stage, "make_generation_engine", lambda *a, **k: PlantedThinker())
    run = run_experiment(_spec(tmp_path, '["logit", "generation"]'))
    assert run.generation["valid"].all() and not run.generation["matches_behavior"].any()
    report = build_report([run.run_dir], figures=False)
    table = next(t for t in report.tables if t.key == "answer_slot_vs_generation")
    unsteered = table.frame[table.frame["condition"] == "unsteered"].iloc[0]
    assert unsteered["answer slot prefers behaviour"] == "100%"
    assert unsteered["generated: behaviour (among valid)"] == "0%"
    assert unsteered["agreement (valid answers)"] == "0%"
    assert "Answer slot versus generated answer" in report.path.read_text()


def test_plan_estimates_generation_cost(tmp_path):
    from remote_steer.run.plan_generation import plan_generation

    spec = _spec(tmp_path, '["logit", "generation"]')
    (plan,) = plan_generation(spec)
    # 3 test items × (1 layer × 2 strengths + baseline) rows, 3 new tokens each; chunks of 2
    # items → 2 requests; 16 rows per batch → one group per chunk: a prompt pass + 3 steps
    assert (plan.configs, plan.rows, plan.tokens, plan.requests, plan.passes) == (2, 9, 27, 2, 8)
    assert plan.bytes_received == 9 * 3 * 4 + 2 * 3 * 8
    assert plan_generation(_spec(tmp_path, '["logit"]')) == []


def test_layer_fractions_and_subsets_parse(tmp_path):
    """The spec side of subsets and depth fractions, without running (the run is -m slow)."""
    text = BASE.format(out=tmp_path, modes='["logit", "generation"]').replace(
        "layers = [4]\n", 'layer_fractions = [0.5, 0.99]\nmodels = ["toy/qwen3"]\n'
    )
    spec = parse_spec(text, "grow.toml")
    assert spec.generation_layers(12) == [6, 11] and spec.generation_layers(36) == [18, 35]
    assert spec.generation.covers("toy/qwen3", "corrigibility") and not spec.generation.covers("other", "corrigibility")
    with pytest.raises(SpecError, match="generation.models"):
        parse_spec(text.replace('models = ["toy/qwen3"]', 'models = ["Qwen3-4B"]'), "grow.toml")
    with pytest.raises(SpecError, match="layer_fractions"):
        parse_spec(text.replace("[0.5, 0.99]", "[1.5]"), "grow.toml")
    with pytest.raises(SpecError, match="best_layers"):
        parse_spec(
            text.replace("layer_fractions = [0.5, 0.99]", "layer_fractions = [0.5]\nbest_layers = 2"), "grow.toml"
        )
