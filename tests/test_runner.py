"""The pipeline end to end on a small spec: files written, resume after interruption."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import toy_spec_text

from remote_steer.analysis.statistics import glass_delta
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.errors import SpecError
from remote_steer.run.runner import run_experiment
from remote_steer.run.spec import parse_spec

SMALL = toy_spec_text(
    "small",
    head="seed = 3",
    concepts=("corrigibility", "self-awareness"),
    max_items=12,
    layers=(4, 8, 11),
    tail="batch_size = 16\nchunk_items = 2",
)


def _spec(tmp_path, text=SMALL):
    return parse_spec(text.replace('name = "small"', f'name = "small"\noutput_dir = "{tmp_path}"'), "small.toml")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return run_experiment(_spec(out))


def test_run_writes_manifest_vectors_and_tidy_results(reference_run):
    root = reference_run.run_dir
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["seed"] == 3
    assert manifest["spec"]["evaluation"]["layers"] == [4, 8, 11]
    assert {"torch", "transformers", "nnsight"} <= set(manifest["versions"])
    assert manifest["git_commit"]
    model = manifest["models"]["toy/qwen3"]
    assert model["revision"].startswith("toy-v") and model["random_weight_toy"] is True
    assert manifest["datasets"]["corrigibility"]["n_test"] == 6

    vectors = SteeringVectors.load(root / "vectors" / "toy--qwen3" / "corrigibility.safetensors")
    assert vectors.vectors.shape == (12, 128) and vectors.n_pairs == 6 and vectors.revision == model["revision"]

    results = pd.read_parquet(root / "results" / "logit_diff.parquet")
    # one row per item × model × dataset × layer × strength
    assert len(results) == 2 * 6 * 3 * 2
    assert not results.duplicated(["model", "dataset", "item_id", "layer", "strength"]).any()
    for column in (
        "model",
        "dataset",
        "item_id",
        "layer",
        "layer_fraction",
        "strength",
        "logit_diff",
        "matching_letter",
    ):
        assert column in results.columns
    assert np.allclose(results["layer_fraction"], (results["layer"] + 1) / 12)  # depth of the layer's output
    # the baseline is one value per item, shared across layers and strengths
    assert (results.groupby(["dataset", "item_id"])["baseline_logit_diff"].nunique() == 1).all()


def test_summary_is_glass_delta_by_hand(reference_run):
    results, summary = reference_run.results, reference_run.summary
    row = summary[summary["dataset"] == "corrigibility"].iloc[0]
    cell = results[(results["dataset"] == "corrigibility")]
    deltas = {}
    for layer in (4, 8, 11):
        at = cell[(cell["layer"] == layer) & (cell["strength"] == 1.0)]
        base = at["baseline_logit_diff"].to_numpy()
        deltas[layer] = (at["logit_diff"].mean() - base.mean()) / base.std(ddof=1)
    best = max(deltas, key=deltas.get)
    assert row["best_layer"] == best
    assert row["glass_delta_pos"] == pytest.approx(deltas[best])
    # by hand: means 6 and 2, baseline SD (ddof=1) of 1, 2, 3 is 1
    assert glass_delta(np.array([5.0, 7.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(4.0)


def test_interrupted_run_resumes_without_recomputing(tmp_path, reference_run):
    spec = _spec(tmp_path)
    calls = {"n": 0}

    def interrupt_after_four():
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, after_part=interrupt_after_four)
    manifest = json.loads((tmp_path / "small" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert not list(tmp_path.rglob("*.tmp")), "no half-written files"

    resumed = run_experiment(spec)
    total_parts = 2 * 3  # two concepts, six test items each, two per chunk
    assert resumed.resumed and resumed.skipped_parts == 4 and resumed.computed_parts == total_parts - 4
    key = ["model", "dataset", "item_id", "layer", "strength"]
    got = resumed.results.sort_values(key).reset_index(drop=True)
    want = reference_run.results.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, atol=1e-6, rtol=0)

    again = run_experiment(spec)  # everything done: nothing recomputed
    assert again.computed_parts == 0 and again.skipped_parts == total_parts


def test_rerun_with_a_changed_spec_is_refused(tmp_path):
    run_experiment(_spec(tmp_path, SMALL.replace("max_items = 12", "max_items = 4")))
    with pytest.raises(SpecError, match="data.max_items"):
        run_experiment(_spec(tmp_path, SMALL.replace("max_items = 12", "max_items = 6")))


def test_generation_mode_writes_the_generation_table(tmp_path):
    text = SMALL.replace("max_items = 12", "max_items = 6").replace(
        'concepts = ["corrigibility", "self-awareness"]', 'concepts = ["corrigibility"]'
    )
    text = text.replace("layers = [4, 8, 11]", 'layers = [4, 11]\nmodes = ["logit", "generation"]')
    text += "[generation]\nlayers = [4]\nmax_new_tokens = 3\nbatch_size = 8\n"
    outcome = run_experiment(_spec(tmp_path, text))
    frame = pd.read_parquet(outcome.run_dir / "results" / "generation.parquet")
    assert len(frame) == 3 * 1 * 2  # test items × generation layers × strengths
    for column in (
        "model",
        "dataset",
        "item_id",
        "layer",
        "strength",
        "text",
        "letter",
        "valid",
        "matches_behavior",
        "baseline_valid",
        "baseline_matches",
    ):
        assert column in frame.columns
    assert set(frame["layer"]) == {4} and set(frame["strength"]) == {-1.0, 1.0}
    # the logit table is still written alongside, from the same vectors
    assert len(outcome.results) == 3 * 2 * 2
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["models"]["toy/qwen3"]["generation_layers"] == [4]
