"""``remote-steer report`` on synthetic run directories: tables, figures, merging,
bad input, and that the analysis layer runs without any model code."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.report.build import ResultsError, build_report, load_runs

REPO_ROOT = Path(__file__).resolve().parents[1]

# (name as a spec would write it, number of layers, training) — the study's six models
STUDY_MODELS = [
    ("Qwen3-4B", 36, "distilled"),
    ("Qwen3-8B", 36, "distilled"),
    ("Qwen3-14B", 40, "distilled"),
    ("Qwen3-30B-A3B", 48, "distilled"),
    ("Qwen3-32B", 64, "rl"),
    ("Qwen3-235B-A22B", 94, "rl"),
]
STUDY_DATASETS = [
    "corrigibility",
    "self-awareness",
    "survival-instinct",
    "power-seeking",
    "coordinate-other-versions",
    "sycophancy",
]
PLANTED_PEAK = {"rl": 0.75, "distilled": 0.55}
SIZES = {
    "Qwen3-4B": 4.0,
    "Qwen3-8B": 8.2,
    "Qwen3-14B": 14.8,
    "Qwen3-30B-A3B": 30.5,
    "Qwen3-32B": 32.8,
    "Qwen3-235B-A22B": 235.0,
}


def synthetic_study(
    models=STUDY_MODELS,
    datasets=STUDY_DATASETS,
    n_items: int = 50,
    layer_step: int = 1,
    width: float = 0.1,
    noise: float = 0.05,
    anti: float = 0.15,
    seed: int = 0,
    generation_every: int | None = 4,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Results shaped like the real study, with planted effects.

    Logit diff of item i at depth f and strength s: b_i + s · k_i · 1.5 · exp(−(f − peak)² / 2w²) + noise,
    peak 0.75 for RL and 0.55 for distilled models. A share ``anti`` of items has k_i < 0
    (anti-steerable); in Qwen3-32B × self-awareness a fifth of the items is strongly
    anti-steerable, so the mean rises while the lower tail drops. Generation: every
    ``generation_every``-th layer; P(valid) falls with strength × effect, more for small
    models; P(matching answer) = sigmoid(2 · logit diff).
    """
    rng = np.random.default_rng(seed)
    logit_frames, generation_frames = [], []
    for name, n_layers, training in models:
        layers = np.arange(math.ceil(0.33 * n_layers), n_layers, layer_step)
        fractions = layers / n_layers
        for dataset in datasets:
            baseline = rng.normal(0.5, 1.0, n_items)
            k = rng.normal(1.0, 0.3, n_items)
            k[rng.random(n_items) < anti] = -0.6
            if name == "Qwen3-32B" and dataset == "self-awareness":
                k[: n_items // 5] = -2.5
            profile = 1.5 * np.exp(-((fractions - PLANTED_PEAK[training]) ** 2) / (2 * width**2))
            for strength in (-1.0, 1.0):
                values = baseline[:, None] + strength * k[:, None] * profile[None, :]
                values = values + rng.normal(0, noise, values.shape)
                item, layer = np.meshgrid(np.arange(n_items), np.arange(len(layers)), indexing="ij")
                frame = pd.DataFrame(
                    {
                        "model": name,
                        "dataset": dataset,
                        "item_id": [f"{dataset}-{i:03d}" for i in item.ravel()],
                        "layer": layers[layer.ravel()],
                        "layer_fraction": fractions[layer.ravel()],
                        "n_layers": n_layers,
                        "strength": strength,
                        "logit_diff": values.ravel(),
                        "baseline_logit_diff": baseline[item.ravel()],
                        "matching_letter": np.where(item.ravel() % 2, "A", "B"),
                        "positions": "assistant",
                        "training": training,
                    }
                )
                logit_frames.append(frame)
                if generation_every:
                    keep = frame[frame["layer"].isin(layers[::generation_every])]
                    generation_frames.append(_generate(keep, name, strength, rng))
    logit = pd.concat(logit_frames, ignore_index=True)
    generation = pd.concat(generation_frames, ignore_index=True) if generation_frames else None
    return logit, generation


def _generate(frame: pd.DataFrame, model: str, strength: float, rng) -> pd.DataFrame:
    n = len(frame)
    effect = (frame["logit_diff"] - frame["baseline_logit_diff"]).abs().to_numpy()
    p_valid = np.clip(0.97 - 0.3 * effect / (1 + np.log10(SIZES.get(model, 1.0))), 0.05, 1)
    valid = rng.random(n) < p_valid
    match = valid & (rng.random(n) < 1 / (1 + np.exp(-2 * frame["logit_diff"].to_numpy())))
    base_match = rng.random(n) < 1 / (1 + np.exp(-2 * frame["baseline_logit_diff"].to_numpy()))
    # the baseline is one generation per item, repeated on each of its rows
    per_item = pd.Series(base_match, index=frame.index).groupby(frame["item_id"].to_numpy()).transform("first")
    letter = np.where(match, frame["matching_letter"], np.where(frame["matching_letter"] == "A", "B", "A"))
    return pd.DataFrame(
        {
            "model": frame["model"],
            "dataset": frame["dataset"],
            "item_id": frame["item_id"],
            "layer": frame["layer"],
            "layer_fraction": frame["layer_fraction"],
            "n_layers": frame["n_layers"],
            "strength": strength,
            "training": frame["training"],
            "text": np.where(valid, [f"({x})" for x in letter], "I cannot answer"),
            "letter": np.where(valid, letter, None),
            "valid": valid,
            "matches_behavior": match,
            "baseline_letter": "A",
            "baseline_valid": True,
            "baseline_matches": per_item.to_numpy(),
        }
    )


def rigour_tables(logit: pd.DataFrame, n: int = 3, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Planted ``results/controls.parquet`` and ``results/norms.parquet``: control vectors do
    nothing (baseline + noise), bootstrap vectors are the real effect + noise; norms grow with depth."""
    rng = np.random.default_rng(seed)
    frames = []
    for kind in ("random", "shuffled", "bootstrap"):
        for v in range(n):
            f = logit.copy()
            centre = f["logit_diff"] if kind == "bootstrap" else f["baseline_logit_diff"]
            f["logit_diff"] = centre + rng.normal(0, 0.05, len(f))
            frames.append(f.assign(kind=kind, vector=v))
    controls = pd.concat(frames, ignore_index=True)
    cells = logit[["model", "dataset", "n_layers", "training"]].drop_duplicates()
    norms = pd.concat(
        [
            pd.DataFrame(
                {
                    "model": r.model,
                    "dataset": r.dataset,
                    "layer": np.arange(r.n_layers),
                    "n_layers": r.n_layers,
                    "layer_fraction": (np.arange(r.n_layers) + 1) / r.n_layers,
                    "vector_norm": 0.5 + np.arange(r.n_layers) * 0.1,
                    "residual_norm": 10.0 + np.arange(r.n_layers),
                    "training": r.training,
                    "positions": "assistant",
                }
            )
            for r in cells.itertuples()
        ],
        ignore_index=True,
    )
    norms["ratio"] = norms["vector_norm"] / norms["residual_norm"]
    return controls, norms


def write_run(
    root: Path,
    name: str,
    logit: pd.DataFrame,
    generation: pd.DataFrame | None = None,
    commit: str = "abc1234",
    rigour: bool = False,
) -> Path:
    """A run directory as the runner leaves it (results and manifest; no vectors needed)."""
    run = root / name
    (run / "results").mkdir(parents=True)
    if rigour:
        controls, norms = rigour_tables(logit)
        controls.to_parquet(run / "results" / "controls.parquet", index=False)
        norms.to_parquet(run / "results" / "norms.parquet", index=False)
    logit.to_parquet(run / "results" / "logit_diff.parquet", index=False)
    if generation is not None:
        generation.to_parquet(run / "results" / "generation.parquet", index=False)
    models = {
        m: {"training": t, "n_layers": int(n)}
        for m, t, n in logit[["model", "training", "n_layers"]].drop_duplicates().itertuples(index=False)
    }
    manifest = {
        "tool": "remote-steer",
        "status": "complete",
        "seed": 0,
        "git_commit": commit,
        "created_at": "2026-01-01T00:00:00+00:00",
        "spec": {"name": name},
        "models": models,
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


SMALL_MODELS = [("Qwen3-4B", 36, "distilled"), ("Qwen3-8B", 36, "distilled"), ("Qwen3-32B", 64, "rl")]


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """Three models, two datasets, every third layer: enough for every table and figure, quick to draw."""
    logit, generation = synthetic_study(
        SMALL_MODELS,
        ["corrigibility", "self-awareness"],
        n_items=16,
        layer_step=3,
        width=0.08,
        noise=0.02,
        generation_every=2,
    )
    root = tmp_path_factory.mktemp("study")
    run = write_run(root, "small", logit, generation, rigour=True)
    report = build_report([run], n_boot=200)
    return run, logit, generation, report


def test_report_writes_every_table_and_figure(small_study):
    run, logit, _, report = small_study
    assert report.out_dir == run / "report"  # default for one run directory
    text = report.path.read_text()
    for title in (
        "Table 1. Average logit diff per model under positive steering",
        "Table 2. Average Glass's delta",
        "Table 3. Best layer per model × dataset",
        "Table 4. Where steering peaks",
        "Table 5. RL versus distilled",
        "Table 6. Per-item steerability",
        "Table 7. Tail shifts",
        "Table 8. Logit-diff effect versus generation",
        "Table 9. Generation at the best layer",
        "Table 10. Vector and residual-stream norms",
        "Table 11. Cross-fitted best layer",
        "Table 12. Vector uncertainty",
        "Table 13. Real vector against control vectors",
    ):
        assert title in text, title
    assert not [f for f in report.figures if f.skipped]
    for figure in report.figures:
        for suffix in (".png", ".svg"):
            path = run / "report" / "figures" / f"{figure.key}{suffix}"
            assert path.stat().st_size > 5000, path
        assert f"figures/{figure.key}.png" in text
    # traceability: the run's path, spec name and commit are in the report
    assert str(run.resolve()) in text and "abc1234" in text and "| small |" in text
    assert "little power" in text and "smallest p-value" in text
    # planted null controls: the real vector stands out at the planted peak, not away from it
    controls = pd.read_csv(run / "report" / "tables" / "controls.csv")
    best = pd.read_csv(run / "report" / "tables" / "best_layers.csv")
    at = controls.merge(
        best[["model", "dataset", "best_layer"]],
        left_on=["model", "dataset", "layer"],
        right_on=["model", "dataset", "best_layer"],
    )
    assert not at.loc[at["strength"] > 0, "within"].astype(bool).any()
    assert at.loc[at["strength"] > 0, "p_value"].to_numpy() == pytest.approx(1 / 7)
    assert "steers further than every control" in text
    uncertainty = pd.read_csv(run / "report" / "tables" / "vector_uncertainty.csv")
    assert uncertainty["share_same_layer"].mean() > 0.6  # bootstrap vectors = real effect + small noise


def test_report_numbers_match_the_plant(small_study):
    run, logit, _, report = small_study
    best = pd.read_csv(run / "report" / "tables" / "best_layers.csv")
    for row in best.itertuples():
        training = dict((m, t) for m, _, t in SMALL_MODELS)[row.model]
        # layers are every third one, so the nearest sampled layer is within 1.5 layers of the peak
        n_layers = dict((m, n) for m, n, _ in SMALL_MODELS)[row.model]
        assert abs(row.best_layer_fraction - PLANTED_PEAK[training]) <= 1.6 * 3 / n_layers
        assert row.glass_delta_pos_ci_low <= row.glass_delta_pos <= row.glass_delta_pos_ci_high
    # Glass's delta in the CSV is the hand formula on the raw rows
    row = best.iloc[0]
    cell = logit[
        (logit["model"] == row["model"])
        & (logit["dataset"] == row["dataset"])
        & (logit["layer"] == row["best_layer"])
        & (logit["strength"] == 1.0)
    ]
    base = cell["baseline_logit_diff"]
    assert row["glass_delta_pos"] == pytest.approx((cell["logit_diff"].mean() - base.mean()) / base.std(ddof=1))
    # permutation test over 3 models, 1 RL: C(3,1) = 3 labellings; RL deepest → p = 1/3, the minimum
    test = pd.read_csv(run / "report" / "tables" / "permutation_test.csv").iloc[0]
    assert (
        test["n_assignments"] == 3 and test["p_value"] == pytest.approx(1 / 3) and test["min_p"] == pytest.approx(1 / 3)
    )
    # the planted strongly anti-steerable fifth of Qwen3-32B × self-awareness
    steer = pd.read_csv(run / "report" / "tables" / "steerability.csv")
    at = best[(best["model"] == "Qwen3-32B") & (best["dataset"] == "self-awareness")].iloc[0]
    s = steer[
        (steer["model"] == "Qwen3-32B") & (steer["dataset"] == "self-awareness") & (steer["layer"] == at["best_layer"])
    ]
    assert s["anti_steerable_fraction"].iloc[0] >= 3 / 16  # 3 planted (16 // 5) plus any random anti items


def test_generation_rates_in_the_report(small_study):
    run, _, generation, _ = small_study
    rates = pd.read_csv(run / "report" / "tables" / "generation_rates.csv")
    row = rates.iloc[0]
    g = generation[
        (generation["model"] == row["model"])
        & (generation["dataset"] == row["dataset"])
        & (generation["layer"] == row["layer"])
        & (generation["strength"] == row["strength"])
    ]
    assert row["valid_rate"] == pytest.approx(g["valid"].mean())
    assert row["behavior_rate"] == pytest.approx(g.loc[g["valid"], "matches_behavior"].mean())
    assert row["behavior_change"] == pytest.approx(
        g.loc[g["valid"], "matches_behavior"].mean() - g["baseline_matches"].mean()
    )


def test_two_runs_merge_and_duplicates_keep_the_first(tmp_path):
    logit, generation = synthetic_study(
        [("Qwen3-4B", 36, "distilled"), ("Qwen3-32B", 64, "rl")],
        ["corrigibility"],
        n_items=8,
        layer_step=6,
        generation_every=None,
    )
    local = logit[logit["model"] == "Qwen3-4B"].assign(model="Qwen/Qwen3-4B")  # a hub id, as a local spec writes it
    remote = logit[logit["model"] == "Qwen3-32B"]
    # the remote run also holds two Qwen3-4B rows, with different values: the first run listed must win
    clash = logit[logit["model"] == "Qwen3-4B"].head(2).assign(logit_diff=99.0)
    run_a = write_run(tmp_path, "local-4b", local, commit="aaaa")
    run_b = write_run(tmp_path, "remote-32b", pd.concat([remote, clash]), commit="bbbb")
    study = load_runs([run_a, run_b])
    assert sorted(study.logit["model"].unique()) == ["Qwen3-32B", "Qwen3-4B"]
    assert len(study.logit) == len(logit)
    assert not (study.logit["logit_diff"] == 99.0).any()
    assert any("2 row(s) of run 'remote-32b'" in n and "dropped" in n for n in study.notes)
    assert any("Qwen/Qwen3-4B → Qwen3-4B" in n for n in study.notes)
    out = tmp_path / "merged"
    result = CliRunner().invoke(
        app,
        ["report", str(run_a), str(run_b), "-o", str(out), "--n-boot", "50", "--no-figures"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    for fragment in ("local-4b", "remote-32b", "aaaa", "bbbb", "Qwen3-4B", "Qwen3-32B", "first run listed wins"):
        assert fragment in text
    assert "Table 1. Average logit diff" in result.output and "Qwen3-32B" in result.output


def test_missing_generation_and_thin_data_shrink_the_report(tmp_path):
    # one model, one layer, positive strength only, and a constant baseline (Glass's delta NaN) in one dataset
    logit, _ = synthetic_study(
        [("toy/qwen3", 12, "distilled")], ["corrigibility", "sycophancy"], n_items=6, generation_every=None
    )
    logit = logit[(logit["layer"] == 8) & (logit["strength"] > 0)].assign(training="random (toy)")
    logit.loc[logit["dataset"] == "sycophancy", "baseline_logit_diff"] = 1.0
    run = write_run(tmp_path, "thin", logit)
    report = build_report([run], tmp_path / "out", n_boot=50)
    text = report.path.read_text()
    assert "no results/generation.parquet" in text and "random-weight toys" in text
    assert "study models not in these results" in text and "needs both groups" in text
    # tables are numbered after the fact: the missing RL-versus-distilled table leaves no gap
    assert "Table 5. Per-item steerability" in text and "Table 7. Cross-fitted" in text and "Table 8." not in text
    skipped = {f.key for f in report.figures if f.skipped}
    assert skipped == {
        "generation_vs_logit_layers",
        "logit_vs_generation_scatter",
        "validity_by_size",
        "norms_by_depth",
        "vector_uncertainty",
        "controls",
    }
    for f in report.figures:
        if not f.skipped:
            assert all(p.exists() for p in f.paths)
    best = pd.read_csv(tmp_path / "out" / "tables" / "best_layers.csv")
    assert math.isnan(best.loc[best["dataset"] == "sycophancy", "glass_delta_pos"].iloc[0])


@pytest.mark.parametrize("case", ["missing dir", "no results", "bad columns"])
def test_bad_input_is_one_line_exit_2(tmp_path, case):
    target = tmp_path / "run"
    if case == "no results":
        target.mkdir()
    elif case == "bad columns":
        (target / "results").mkdir(parents=True)
        pd.DataFrame({"model": ["m"], "dataset": ["d"]}).to_parquet(target / "results" / "logit_diff.parquet")
    result = CliRunner().invoke(app, ["report", str(target)])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and str(target) in message, message
    assert "logit_diff.parquet" in message or "column" in message
    assert "Traceback" not in result.output
    with pytest.raises(ResultsError):
        load_runs([target])


def test_report_command_has_help():
    result = CliRunner().invoke(app, ["report", "--help"])
    assert result.exit_code == 0 and "RUN_DIR/report" in result.output


NO_MODEL_CODE = """
import sys
from pathlib import Path
import numpy as np, pandas as pd
from typer.testing import CliRunner
from remote_steer.cli import app
import remote_steer.report.build
run = Path(sys.argv[1])
rng = np.random.default_rng(0)
rows = [dict(model=m, dataset="corrigibility", item_id=str(i), layer=l, layer_fraction=l / 12, n_layers=12,
             strength=s, logit_diff=float(rng.normal(s * l / 10)), baseline_logit_diff=float(i % 3),
             training=t) for m, t in (("Qwen3-4B", "distilled"), ("Qwen3-32B", "rl"))
        for i in range(5) for l in (6, 9) for s in (-1.0, 1.0)]
(run / "results").mkdir(parents=True)
pd.DataFrame(rows).to_parquet(run / "results" / "logit_diff.parquet")
result = CliRunner().invoke(app, ["report", str(run), "--n-boot", "20", "-q"])
assert result.exit_code == 0, result.output
assert (run / "report" / "figures" / "glass_delta_heatmap.png").exists()
heavy = sorted(m for m in ("torch", "transformers", "nnsight", "safetensors", "remote_steer.models.loading",
                           "remote_steer.run.runner", "remote_steer.engines.sweep_plain", "remote_steer.models.toy")
               if m in sys.modules)
print("HEAVY", heavy)
assert not heavy, heavy
"""


def test_report_runs_without_model_code(tmp_path):
    """A fresh interpreter: the CLI's report command and the analysis layer import no model code."""
    done = subprocess.run(
        [sys.executable, "-c", NO_MODEL_CODE, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HEAVY []" in done.stdout
