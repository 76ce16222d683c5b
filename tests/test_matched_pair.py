"""The matched pair (issue 19): registry cards, the spec, the plan, and the report's paired design.

A synthetic matched-pair result set (QwQ-32B, DeepSeek-R1-Distill-Qwen-32B and
Qwen2.5-32B-Instruct, all 64 layers on the base Qwen2.5-32B) with a planted depth
difference goes through the real report code, which must find it, on one depth axis.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import write_run
from typer.testing import CliRunner

from remote_steer.analysis import statistics as A
from remote_steer.cli import app
from remote_steer.models.registry import MATCHED_PAIR, base_model, grouped_cards, lookup
from remote_steer.report.build import build_report, matched_base

REPO_ROOT = Path(__file__).resolve().parents[1]
PAIR = [("QwQ-32B", "rl"), ("DeepSeek-R1-Distill-Qwen-32B", "distilled"), ("Qwen2.5-32B-Instruct", "sft+rlhf")]
DATASETS = ["corrigibility", "self-awareness", "sycophancy", "survival-instinct"]
PEAK = {"rl": 0.78, "distilled": 0.5, "sft+rlhf": 0.62}  # the planted depths
N_LAYERS = 64


def _matched_results(n_items: int = 12, seed: int = 0) -> pd.DataFrame:
    """Logit diffs with a Gaussian steering profile over depth peaking at PEAK[training]."""
    rng = np.random.default_rng(seed)
    layers = np.arange(21, N_LAYERS, 2)
    fractions = (layers + 1) / N_LAYERS
    frames = []
    for (name, training), dataset in itertools.product(PAIR, DATASETS):
        baseline = rng.normal(0.5, 1.0, n_items)
        k = rng.normal(1.0, 0.2, n_items)
        profile = 1.5 * np.exp(-((fractions - PEAK[training]) ** 2) / (2 * 0.06**2))
        for strength in (-1.0, 1.0):
            values = baseline[:, None] + strength * k[:, None] * profile[None, :] + rng.normal(0, 0.02, (n_items, 1))
            item, layer = np.meshgrid(np.arange(n_items), np.arange(len(layers)), indexing="ij")
            frames.append(
                pd.DataFrame(
                    {
                        "model": name,
                        "dataset": dataset,
                        "item_id": [f"{dataset}-{i:03d}" for i in item.ravel()],
                        "layer": layers[layer.ravel()],
                        "layer_fraction": fractions[layer.ravel()],
                        "n_layers": N_LAYERS,
                        "strength": strength,
                        "logit_diff": values.ravel(),
                        "baseline_logit_diff": baseline[item.ravel()],
                        "matching_letter": np.where(item.ravel() % 2, "A", "B"),
                        "positions": "assistant",
                        "training": training,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_cards_share_one_base_and_shape():
    cards = [lookup(name) for name, _ in PAIR]
    assert all(c is not None for c in cards)
    assert {(c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads, c.architecture) for c in cards} == {
        (64, 5120, 40, 8, "qwen2")
    }
    assert {base_model(c) for c in cards} == {"Qwen2.5-32B"}
    assert [c.training for c in cards] == [t for _, t in PAIR]
    assert all(c.default_backend == "remote" and c.about for c in MATCHED_PAIR)
    # grouping: family, then base; the three sit together
    names = [c.name for c in grouped_cards()]
    positions = sorted(names.index(n) for n, _ in PAIR)
    assert positions == list(range(positions[0], positions[0] + 3))


def test_sign_flip_test_by_hand():
    d = pd.Series([0.2, 0.1, 0.3, -0.05])
    result = A.sign_flip_test(d)
    means = [
        abs(sum(s * x for s, x in zip(signs, d, strict=True)) / 4) for signs in itertools.product((1, -1), repeat=4)
    ]
    assert result.p_value == pytest.approx(sum(m >= abs(d.mean()) - 1e-12 for m in means) / 16)
    assert (result.n, result.n_positive, result.n_assignments, result.min_p) == (4, 3, 16, 2 / 16)


def test_report_finds_the_planted_depth_difference_on_one_axis(tmp_path):
    logit = _matched_results()
    run = write_run(tmp_path, "matched", logit)
    training = dict(PAIR)
    assert matched_base(training, {m: N_LAYERS for m in training}) == "Qwen2.5-32B"
    assert matched_base(training, {"QwQ-32B": 64, "DeepSeek-R1-Distill-Qwen-32B": 48}) is None  # not one axis
    assert matched_base({"Qwen3-32B": "rl", "Qwen3-4B": "distilled"}, {"Qwen3-32B": 64, "Qwen3-4B": 64}) is None
    report = build_report([run], n_boot=50)
    text = report.path.read_text()
    assert "RL versus distilled on one base (Qwen2.5-32B)" in text and "Matched design" in text
    paired = pd.read_csv(run / "report" / "tables" / "matched_pair.csv")
    assert sorted(paired["dataset"]) == sorted(DATASETS)  # in report order
    planted = PEAK["rl"] - PEAK["distilled"]
    # layers every 2nd: the best layer is within one sampled step (2 / 64) of the planted peak, per model
    assert np.abs(paired["difference"] - planted).max() <= 2 * 2 / N_LAYERS + 1e-9
    assert paired["layer_difference"].to_numpy() == pytest.approx(paired["difference"].to_numpy() * N_LAYERS)
    test = pd.read_csv(run / "report" / "tables" / "paired_test.csv").iloc[0]
    # RL deeper in every dataset: only the all-plus and all-minus patterns reach |mean| → p = 2 / 2^4
    assert test["n_positive"] == len(DATASETS) and test["p_value"] == pytest.approx(2 / 2 ** len(DATASETS))
    match = re.search(r"RL − distilled: mean ([+-][0-9.]+) of the depth", text)
    assert match and float(match.group(1)) == pytest.approx(paired["difference"].mean(), abs=1e-3)
    assert not (run / "report" / "tables" / "permutation_test.csv").exists()  # 1 vs 1 model: no model-level test
    # the third post-training is in the per-model depth table with its label
    by_model = pd.read_csv(run / "report" / "tables" / "depth_by_model.csv")
    assert set(by_model["training"]) == {"rl", "distilled", "sft+rlhf"}


def test_plan_prints_the_three_models_with_backends_costs_and_training():
    result = CliRunner().invoke(
        app, ["plan", str(REPO_ROOT / "experiments" / "matched-pair.toml")], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    for name, training in PAIR:
        line = next(line for line in result.output.splitlines() if name in line)
        assert training in line and "remote" in line and " 64 " in line
        assert re.search(r"\d+ MB", line), line  # bytes each way


def test_spec_is_remote_with_six_concepts_and_depth_fractions():
    from remote_steer.run.spec import load_spec

    spec = load_spec(REPO_ROOT / "experiments" / "matched-pair.toml")
    assert [m.name for m in spec.models] == [n for n, _ in PAIR]
    assert {m.backend for m in spec.models} == {"remote"}
    assert len(spec.data.concepts) == 6
    assert spec.evaluation.layers is None and spec.evaluation.layer_start_fraction == pytest.approx(0.33)
    assert spec.generation.layer_fractions is not None


def test_models_command_groups_by_family_and_base():
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "Qwen2.5-32B" in line]
    assert len(lines) >= 3 and all("Qwen2.5" in line for line in lines)


def test_plan_memory_rows_know_the_matched_pair_shapes():
    """The plan's memory table reads the three 32B models' shapes from their cards (no
    download): 32.5B parameters at 2 bytes, on the server."""
    from remote_steer.run.memory_plan import memory_rows
    from remote_steer.run.spec import load_spec

    rows = memory_rows(load_spec(REPO_ROOT / "experiments" / "matched-pair.toml"))
    assert len(rows) == 3
    for row in rows:
        assert row["device"] == "remote" and row["fits"] == "server"
        assert 64 < row["weights_gb"] < 67  # 32.8B parameters (64 layers, 27648 MLP, untied 152064 vocab) × 2 bytes
