"""Decodability by depth (analysis/decodability.py) against independent computations.

- the extraction pass's per-item readouts equal plain transformers forward hooks (the
  answer-token residual after every layer; the logit lens through the final norm,
  unembedding and Gemma 2's soft-cap);
- the logistic-regression probe equals scikit-learn's (both Newton branches), the CAA
  classifier a hand-written loop;
- a planted effect: a toy whose residual carries the concept from a known layer on
  reads at chance below it and perfectly from it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import hf_module, hook_layer_outputs, make_items, toy_spec_text

from remote_steer.analysis import decodability as dec
from remote_steer.analysis import layer_predictor as P
from remote_steer.analysis.statistics import glass_deltas
from remote_steer.data.prompts import encode_items
from remote_steer.display import NullDisplay
from remote_steer.engines.sweep_fast import extract_caa_fast, extract_caa_fast_readout
from remote_steer.remote.backend import Backend


def _hook_lens(model, item) -> torch.Tensor:
    """[layers] logit(matching) − logit(other) from each decoder layer's last-position output
    through the module's own final norm and lm_head (soft-capped as the config says)."""
    hf = hf_module(model)
    captured = []
    hooks = [
        layer.register_forward_hook(
            lambda _m, _i, out: captured.append((out[0] if isinstance(out, tuple) else out)[0, -1])
        )
        for layer in hf.model.layers
    ]
    try:
        with torch.inference_mode():
            final = hf(input_ids=torch.tensor([list(item.prompt_ids)])).logits[0, -1]
            logits = hf.lm_head(hf.model.norm(torch.stack(captured)[:, None]))[:, 0]
    finally:
        for hook in hooks:
            hook.remove()
    cap = getattr(hf.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    diff = logits[:, item.matching_token] - logits[:, item.other_token]
    # the last layer's lens is the model's own answer
    assert abs(float(diff[-1]) - float(final[item.matching_token] - final[item.other_token])) < 1e-4
    return diff


def _small_toy(name: str, n_layers: int = 4):
    """A fresh toy (callers may change its weights): the Qwen3 one cut to n_layers × hidden 64."""
    from remote_steer.models.loading import load_model, resolve
    from remote_steer.models.toy import ensure_toy

    source = resolve(name) if name != "toy/qwen3" else resolve(str(ensure_toy(name, n_layers=n_layers, hidden_size=64)))
    return load_model(source, dtype="float32")


@pytest.mark.parametrize("name", ["toy/qwen3", "toy/gemma2"])  # gemma2: final norm + soft-cap
def test_readout_equals_plain_hooks(name):
    model = _small_toy(name)
    items = encode_items(model.tokenizer, make_items(5, seed=4))
    reference = extract_caa_fast(model, items, concept="c", batch_size=2, backend=Backend())
    vectors, _, readout = extract_caa_fast_readout(
        model, items, concept="c", batch_size=2, backend=Backend(), basis=torch.empty(0)
    )
    torch.testing.assert_close(vectors.vectors, reference.vectors)  # the readout changes nothing else
    basis = dec.readout_basis(model.hidden_size, remote=True, seed=0, dims=8)
    _, _, projected = extract_caa_fast_readout(model, items, concept="c", batch_size=3, backend=Backend(), basis=basis)
    assert readout is not None and projected is not None
    for i, item in enumerate(items):
        positive = hook_layer_outputs(model, [*item.prompt_ids, item.matching_token])
        negative = hook_layer_outputs(model, [*item.prompt_ids, item.other_token])
        scale = float(positive.abs().max())
        torch.testing.assert_close(readout.positive[i], positive, atol=1e-5 * scale, rtol=0)
        torch.testing.assert_close(readout.negative[i], negative, atol=1e-5 * scale, rtol=0)
        torch.testing.assert_close(projected.positive[i], positive @ basis, atol=1e-5 * scale, rtol=0)
        lens = _hook_lens(model, item)
        torch.testing.assert_close(readout.lens[i], lens, atol=1e-5 * max(1.0, float(lens.abs().max())), rtol=0)
        torch.testing.assert_close(projected.lens[i], readout.lens[i])
    assert float(readout.lens.std()) > 1e-3  # the lens moves, or the comparison proves little


def test_basis_is_orthonormal_and_seeded():
    basis = dec.readout_basis(96, remote=True, seed=3, dims=16)
    torch.testing.assert_close(basis.T @ basis, torch.eye(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(basis, dec.readout_basis(96, remote=True, seed=3, dims=16))
    assert dec.readout_basis(96, remote=False, seed=3).numel() == 0
    assert dec.readout_bytes(100, 64, 64) == 100 * 64 * 129 * 4


@pytest.mark.parametrize(("n", "p"), [(40, 6), (12, 30)])  # both Newton branches: p ≤ n and p > n
def test_probe_equals_sklearn(n, p):
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(n + p)
    x = rng.normal(size=(3, n, p))
    y = (rng.random(n) < 0.5).astype(float)
    x[:, y == 1, 0] += 1.0
    ours = dec.fit_logistic(torch.tensor(x), torch.tensor(y), c=0.7).numpy()
    for b in range(3):
        ref = sklearn.LogisticRegression(C=0.7, fit_intercept=False, tol=1e-12, max_iter=10_000).fit(x[b], y)
        np.testing.assert_allclose(ours[b], ref.coef_[0], atol=1e-5 * max(1.0, np.abs(ref.coef_).max()), rtol=0)


def test_probe_accuracy_equals_sklearn_cross_validation():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    n, layers, k = 24, 3, 10
    concept = rng.normal(size=k)
    pos = rng.normal(size=(n, layers, k)) + np.array([0.0, 0.3, 1.0])[None, :, None] * concept
    neg = rng.normal(size=(n, layers, k)) - np.array([0.0, 0.3, 1.0])[None, :, None] * concept
    folds = dec.item_folds(["A", "B"] * (n // 2), 4, seed=1)
    ours = dec.probe_accuracy(torch.tensor(pos), torch.tensor(neg), folds)
    for layer in range(layers):
        correct = 0
        for held in folds:
            train = np.setdiff1d(np.arange(n), held)
            xt = np.concatenate([pos[train, layer], neg[train, layer]])
            mean, std = xt.mean(0), xt.std(0, ddof=1)

            def aug(a, mean=mean, std=std):
                return np.c_[(a - mean) / std, np.ones(len(a))]

            fit = sklearn.LogisticRegression(C=dec.PROBE_C, fit_intercept=False, tol=1e-12, max_iter=10_000)
            fit.fit(aug(xt), np.r_[np.ones(len(train)), np.zeros(len(train))])
            correct += (fit.predict(aug(pos[held, layer])) == 1).sum() + (fit.predict(aug(neg[held, layer])) == 0).sum()
        assert ours[layer] == pytest.approx(correct / (2 * n))
    assert ours[2] > 0.9 > ours[0] + 0.2


def test_caa_accuracy_equals_hand_written_loop():
    rng = np.random.default_rng(5)
    n, layers, k = 15, 2, 4
    pos, neg = rng.normal(size=(n, layers, k)) + 0.5, rng.normal(size=(n, layers, k))
    folds = dec.item_folds(list("AAB" * 5), 5, seed=2)
    assert sorted(np.concatenate(folds).tolist()) == list(range(n))
    ours = dec.caa_accuracy(torch.tensor(pos), torch.tensor(neg), folds)
    for layer in range(layers):
        right = 0
        for held in folds:
            train = [i for i in range(n) if i not in held]
            direction = np.mean([pos[i, layer] - neg[i, layer] for i in train], axis=0)
            cut = np.mean([(pos[i, layer] + neg[i, layer]) @ direction / 2 for i in train])
            right += sum(pos[i, layer] @ direction > cut for i in held)
            right += sum(neg[i, layer] @ direction < cut for i in held)
        assert ours[layer] == pytest.approx(right / (2 * n))


def test_folds_keep_the_letter_balance():
    folds = dec.item_folds(["A"] * 10 + ["B"] * 10, 5, seed=0)
    assert [len(f) for f in folds] == [4] * 5
    assert all(sum(i < 10 for i in f) == 2 for f in folds)


def test_planted_concept_reads_from_its_layer():
    """The matching and other answer tokens share one embedding, so the two rows are
    identical until a hook adds +u (matching) or −u (other) to layer 3's output: the probe
    and the CAA classifier read at chance below layer 3 and perfectly from it on."""
    model = _small_toy("toy/qwen3", n_layers=6)
    hf = hf_module(model)
    items = encode_items(model.tokenizer, make_items(20, seed=7))
    a, b = items[1].matching_token, items[1].other_token  # make_items: odd items match "A"
    items = [dataclasses.replace(it, matching_letter="A", matching_token=a, other_token=b) for it in items]
    with torch.no_grad():
        hf.model.embed_tokens.weight[b] = hf.model.embed_tokens.weight[a]
    direction = torch.randn(64, generator=torch.Generator().manual_seed(0))
    seen: dict[str, torch.Tensor] = {}
    planted = 3

    def remember(_module, inputs, _output):
        seen["ids"] = inputs[0]

    def plant(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        sign = (seen["ids"] == a).float() - (seen["ids"] == b).float()
        hidden = hidden + 2.0 * sign.to(hidden.device)[..., None] * direction
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    hooks = [
        hf.model.embed_tokens.register_forward_hook(remember),
        hf.model.layers[planted].register_forward_hook(plant),
    ]
    try:
        _, _, readout = extract_caa_fast_readout(
            model, items, concept="c", batch_size=8, backend=Backend(), basis=torch.empty(0)
        )
    finally:
        for hook in hooks:
            hook.remove()
    assert readout is not None
    frame = dec.decodability_frame(readout, ["A"] * len(items), model="m", concept="c", training="t", seed=0)
    below, above = frame[frame.layer < planted], frame[frame.layer >= planted]
    assert (below.probe_accuracy == 0.5).all() and (below.caa_accuracy == 0.5).all()
    assert (above.probe_accuracy == 1.0).all() and (above.caa_accuracy == 1.0).all()
    # ... and the layer predictor puts the concept's onset there, inside its window
    assert P.predict_layer(frame) == P.predict_layer(frame, "caa_accuracy") == planted
    assert planted in P.window(P.predict_layer(frame), list(range(6)), 6)


def test_predictor_picks_the_onset_and_compares_with_the_sweep():
    def curve(onset, n=12):
        values = [0.5 + 0.4 * (layer >= onset) + 0.002 * layer for layer in range(n)]
        return pd.DataFrame({"layer": range(n), "probe_accuracy": values, "n_layers": n})

    frames = []
    for dataset, onset in (("a", 3), ("b", 6), ("c", 9)):
        frames.append(curve(onset).assign(model="m", dataset=dataset))
    assert [P.predict_layer(f) for f in frames] == [3, 6, 9]
    flat = curve(99)  # never rises: the first layer
    assert P.predict_layer(flat.assign(probe_accuracy=0.4)) == 0
    assert P.window(6, [4, 5, 6, 7, 8, 9, 10, 11], 12, half_width=0.1) == [5, 6, 7]
    assert P.window(0, [4, 6], 12, half_width=0.1) == [4]  # nothing near: the nearest sweep layer
    summary = pd.DataFrame({"model": "m", "dataset": ["a", "b", "c"], "best_layer": [4, 6, 11]})
    cells = P.compare(pd.concat(frames), summary, {"m": list(range(3, 12))}, half_width=0.1)
    assert cells["hit"].tolist() == [True, True, False]
    assert cells["saved"].tolist() == pytest.approx([7 / 9, 6 / 9, 6 / 9])  # windows of 2, 3 and 3 layers
    result = P.summarise(cells)
    assert result["rho"] == pytest.approx(1.0) and result["hit_rate"] == pytest.approx(2 / 3)


def test_window_check_by_hand():
    """A predicted-window run beside its full sweep (scripts/predicted_window_check.py):
    configurations counted once per layer × strength however many items, a model the
    window run lacks left out; every number below by hand."""

    def logit(cells):
        rows = [
            {"model": m, "dataset": d, "item_id": i, "layer": layer, "strength": s}
            for m, d, layers in cells
            for layer in layers
            for s in (-1.0, 1.0)
            for i in range(3)
        ]
        return pd.DataFrame(rows)

    def best(rows):
        return pd.DataFrame(rows, columns=["model", "dataset", "best_layer", "glass_delta_pos"])

    full = logit([("m", "a", [2, 4, 6]), ("m", "b", [2, 4, 6]), ("other", "a", [2, 4, 6])])
    full_best = best([("m", "a", 4, 0.6), ("m", "b", 6, 0.4), ("other", "a", 2, 0.9)])
    windowed = logit([("m", "a", [4, 6]), ("m", "b", [2])])
    windowed_best = best([("m", "a", 4, 0.6), ("m", "b", 2, 0.1)])
    cells = P.window_check(full, full_best, windowed, windowed_best)
    assert cells["dataset"].tolist() == ["a", "b"] and set(cells["model"]) == {"m"}
    assert cells["window_layers"].tolist() == [[4, 6], [2]]
    assert cells["configurations"].tolist() == [4, 2] and cells["full_configurations"].tolist() == [6, 6]
    assert cells["saved"].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert cells["hit"].tolist() == [True, False]
    assert cells["chance"].tolist() == pytest.approx([2 / 3, 1 / 3])
    (summary,) = P.window_check_summary(cells).to_dict("records")
    assert (summary["concepts"], summary["configurations"], summary["full_configurations"]) == (2, 6, 12)
    assert summary["saved"] == pytest.approx(0.5) and summary["hits"] == 1
    assert summary["hit_rate"] == pytest.approx(0.5) and summary["chance_hit_rate"] == pytest.approx(0.5)
    assert summary["window_delta"] == pytest.approx(0.35) and summary["full_delta"] == pytest.approx(0.5)


def test_spearman_equals_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=15), rng.normal(size=15).round(0)  # ties on one side
    assert P.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    low, high = P.spearman_interval(a, a + rng.normal(size=15) * 0.1)
    assert 0.5 < low <= high <= 1.0


def test_whitened_and_probe_solves_finish_with_two_threads_at_gemmas_shape():
    """The batched SPD solves (the whitened direction, the probe's Newton steps) use Cholesky:
    torch 2.13's batched LU (torch.linalg.solve) hung in MKL's DLASWP with two threads at
    Gemma 3 270M's shape (18 layers × hidden 640). In a subprocess, so a hang fails here."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "torch.set_num_threads(2)\n"
        "from remote_steer.analysis.directions import whitened_direction\n"
        "from remote_steer.analysis.decodability import spd_solve\n"
        "g = torch.Generator().manual_seed(0)\n"
        "pos = torch.randn(20, 18, 640, generator=g) * 100\n"
        "neg = pos + torch.randn(20, 18, 640, generator=g)\n"
        "w = whitened_direction(pos, neg)\n"
        "a = torch.randn(18, 640, 640, dtype=torch.float64, generator=g)\n"
        "a = a @ a.transpose(1, 2) + torch.eye(640, dtype=torch.float64)\n"
        "b = torch.randn(18, 640, 1, dtype=torch.float64, generator=g)\n"
        "assert torch.allclose(a @ spd_solve(a, b), b, atol=1e-6)\n"
        "assert not torch.isnan(w).any()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "oneMKL ERROR" not in done.stdout + done.stderr


def test_directions_equal_numpy_and_sklearn():
    """PCA against scikit-learn's PCA (and numpy's SVD), the whitened mean difference
    against a numpy solve, the mean difference by hand; every direction unit-norm and on
    the mean difference's side."""
    from remote_steer.analysis import directions as D

    rng = np.random.default_rng(9)
    n, layers, hidden = 14, 2, 6
    pos = rng.normal(size=(n, layers, hidden)) + np.array([1.0, 0, 0, 0, 0, 0])
    neg = rng.normal(size=(n, layers, hidden))
    pos[:, :, 1] += rng.normal(size=(n, layers)) * 3  # one high-variance axis for the PCA to find
    found = D.directions(torch.tensor(pos, dtype=torch.float32), torch.tensor(neg, dtype=torch.float32))
    diffs = pos - neg
    for layer in range(layers):
        mean = diffs[:, layer].mean(0)
        np.testing.assert_allclose(found["mean_diff"][layer].numpy(), mean / np.linalg.norm(mean), atol=1e-5)
        centred = diffs[:, layer] - mean
        first = np.linalg.svd(centred, full_matrices=False)[2][0]
        first *= np.sign(first @ mean)
        np.testing.assert_allclose(found["pca"][layer].numpy(), first, atol=1e-5)
        decomposition = pytest.importorskip("sklearn.decomposition")
        component = decomposition.PCA(n_components=1).fit(diffs[:, layer]).components_[0]
        np.testing.assert_allclose(np.abs(found["pca"][layer].numpy()), np.abs(component), atol=1e-5)
        within = np.concatenate([pos[:, layer] - pos[:, layer].mean(0), neg[:, layer] - neg[:, layer].mean(0)])
        cov = within.T @ within / (2 * n - 2)
        shrunk = (1 - D.SHRINKAGE) * cov + D.SHRINKAGE * np.trace(cov) / hidden * np.eye(hidden)
        white = np.linalg.solve(shrunk, mean)
        np.testing.assert_allclose(found["whitened"][layer].numpy(), white / np.linalg.norm(white), atol=1e-5)
        for method in D.METHODS:
            assert float(found[method][layer].norm()) == pytest.approx(1.0, abs=1e-5)
            assert float(found[method][layer] @ torch.tensor(mean, dtype=torch.float32)) > 0
    assert abs(float(found["pca"][0, 1])) > 0.9  # the PCA found the high-variance axis


def test_glass_rows_by_hand():
    from remote_steer.run.methods_stage import glass_rows

    rng = np.random.default_rng(1)
    base = rng.normal(size=30)
    steered = base[:, None] + np.array([0.5, -1.0])
    stats = glass_rows(base, steered, n_boot=200)
    np.testing.assert_allclose(stats[:, 0], np.array([0.5, -1.0]) / base.std(ddof=1))
    assert (stats[:, 1] <= stats[:, 0]).all() and (stats[:, 0] <= stats[:, 2]).all()


SMALL_RUN = toy_spec_text(
    "depth",
    head="seed = 1",
    concepts=("corrigibility", "self-awareness"),
    layers=(8,),
    tail="batch_size = 16\nchunk_items = 8",
)


SIDE_EFFECTS_RUN = toy_spec_text(
    "depth",
    head="seed = 1",
    concepts=("corrigibility", "self-awareness"),
    layers=(4, 8),
    tail="batch_size = 16\nchunk_items = 8\nside_effects = true",
)


def test_run_writes_decodability_and_the_side_effects_matrix_from_the_sweeps_prompt_passes(tmp_path):
    """A run with ``side_effects = true`` writes results/decodability.parquet and
    results/side_effects.parquet. The matrix steers the prompt passes its sweep kept: the
    diagonal is Glass's delta the sweep measured at the best layer, an off-diagonal cell
    equals a plain forward hook's logit diffs, and ``scripts/side_effects.py``'s pass over a
    finished run (each prompt run again) gives the same table. A part lost is computed again
    on the next run, the same; an up-to-date one is not touched."""
    from remote_steer.engines.extraction import SteeringVectors
    from remote_steer.run.runner import prepare, run_experiment
    from remote_steer.run.side_effects import side_effects, specificity
    from remote_steer.run.spec import parse_spec

    spec = parse_spec(SIDE_EFFECTS_RUN.replace("seed = 1", f'seed = 1\noutput_dir = "{tmp_path}"'), "depth.toml")
    outcome = run_experiment(spec)
    table = pd.read_parquet(outcome.run_dir / "results" / "decodability.parquet")
    assert len(table) == 2 * 12 and table["probe_accuracy"].between(0, 1).all()
    frame = pd.read_parquet(outcome.run_dir / "results" / "side_effects.parquet")
    assert len(frame) == 4 and set(frame["prompt_pass"]) == {"kept from the sweep"}
    assert set(frame["backend"]) == {"local"}
    summary = outcome.summary.set_index("dataset")
    diagonal = frame[frame["vector"] == frame["dataset"]].set_index("dataset")
    for concept in summary.index:
        assert diagonal.loc[concept, "glass_delta"] == pytest.approx(summary.loc[concept, "glass_delta_pos"], rel=1e-6)
        assert diagonal.loc[concept, "layer"] == summary.loc[concept, "best_layer"]
    assert len(specificity(frame)) == 1
    from remote_steer.report.build import build_report

    report = build_report([outcome.run_dir], tmp_path / "report", n_boot=20, figures=False)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Side effects: a vector on its own concept's items" in text
    assert sum(t.key == "side_effects" for t in report.tables) == 1
    written = pd.read_csv(tmp_path / "report" / "tables" / "specificity.csv")
    assert written["diagonal"].iloc[0] == pytest.approx(diagonal["glass_delta"].mean())
    # one off-diagonal cell by hand: corrigibility's vector on self-awareness's items
    from conftest import hook_logit_diff

    from remote_steer.models.loading import load_model, resolve

    model = load_model(resolve("toy/qwen3"), dtype="float32")
    plan = prepare(spec)
    _, test = plan.models[0].encoded["self-awareness"]
    layer = int(summary.loc["corrigibility", "best_layer"])
    vector = SteeringVectors.load(outcome.run_dir / "vectors" / "toy--qwen3" / "corrigibility.safetensors").vectors
    base = np.array([hook_logit_diff(model, it) for it in test])
    steered = np.array(
        [hook_logit_diff(model, it, layer, 1.0, vector[layer], it.steer_start("assistant")) for it in test]
    )
    cell = frame[(frame["vector"] == "corrigibility") & (frame["dataset"] == "self-awareness")].iloc[0]
    expected = (steered.mean() - base.mean()) / base.std(ddof=1)
    assert cell["glass_delta"] == pytest.approx(expected, rel=1e-3, abs=1e-4)
    # the finished run's pass, every prompt run again: the same matrix
    again = side_effects(plan, outcome.run_dir)
    assert set(again["prompt_pass"]) == {"run again"}
    np.testing.assert_allclose(again["glass_delta"], frame["glass_delta"], rtol=1e-4, atol=1e-5)
    # a lost part: the next run computes it again (its sweep is saved, so the prompt pass reruns)
    parts = sorted((outcome.run_dir / "parts" / "side_effects").rglob("*.parquet"))
    assert len(parts) == 2
    kept = parts[1].stat().st_mtime_ns
    parts[0].unlink()
    rerun = run_experiment(spec)
    redone = pd.read_parquet(rerun.run_dir / "results" / "side_effects.parquet")
    assert sorted(set(redone["prompt_pass"])) == ["kept from the sweep", "run again"]
    np.testing.assert_allclose(redone["glass_delta"], frame["glass_delta"], rtol=1e-4, atol=1e-5)
    assert parts[1].stat().st_mtime_ns == kept


def test_methods_in_a_run_equal_the_finished_run_script_and_reach_the_report(tmp_path):
    """``methods = true``: right after each concept's sweep, the four methods' vectors from
    the extraction's own readout, steered on the prompt passes the sweep kept, give the same
    table as ``compare_methods`` on the finished run (a fresh readout pass and fresh prompt
    passes); the vector files are saved and the report shows the methods table; a rerun
    computes nothing again."""
    from remote_steer.analysis.directions import METHODS
    from remote_steer.engines.extraction import SteeringVectors
    from remote_steer.report.build import build_report
    from remote_steer.run.methods_stage import STRENGTHS, compare_methods
    from remote_steer.run.runner import prepare, run_experiment
    from remote_steer.run.spec import parse_spec

    text = SIDE_EFFECTS_RUN.replace("side_effects = true", "methods = true")
    spec = parse_spec(text.replace("seed = 1", f'seed = 1\noutput_dir = "{tmp_path}"'), "m.toml")
    outcome = run_experiment(spec)
    frame = pd.read_parquet(outcome.run_dir / "results" / "methods.parquet")
    assert len(frame) == 2 * len(METHODS) * 2 * len(STRENGTHS) and set(frame["backend"]) == {"local"}
    for method in METHODS:
        saved = SteeringVectors.load(outcome.run_dir / "vectors" / "toy--qwen3" / f"corrigibility.{method}.safetensors")
        norms = saved.residual_norms
        assert norms is not None
        np.testing.assert_allclose(saved.vectors.norm(dim=-1), norms, rtol=1e-4)
    key = ["dataset", "method", "layer", "strength"]
    again = compare_methods(prepare(spec), outcome.run_dir).sort_values(key).reset_index(drop=True)
    frame = frame.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(frame["glass_delta"], again["glass_delta"], rtol=1e-3, atol=1e-4)
    build_report([outcome.run_dir], tmp_path / "report", n_boot=20, figures=False)
    assert "Which direction steers best" in (tmp_path / "report" / "report.md").read_text()
    part = next((outcome.run_dir / "parts" / "methods").rglob("*.parquet"))
    written = part.stat().st_mtime_ns
    assert run_experiment(spec).computed_parts == 0 and part.stat().st_mtime_ns == written


def test_side_effects_of_a_remote_model_run_each_prompt_again_and_agree_with_local(tmp_path):
    """A remote model's server keeps nothing between requests: the matrix runs one request
    per concept (every prompt again), with the same numbers as the local run's kept passes."""
    from remote_steer.run.runner import run_experiment
    from remote_steer.run.spec import parse_spec

    frames = {}
    for backend in ("local", "simulated-remote"):
        text = SIDE_EFFECTS_RUN.replace('dtype = "float32"', f'dtype = "float32"\nbackend = "{backend}"')
        spec = parse_spec(text.replace("seed = 1", f'seed = 1\noutput_dir = "{tmp_path / backend}"'), "d.toml")
        outcome = run_experiment(spec)
        frames[backend] = pd.read_parquet(outcome.run_dir / "results" / "side_effects.parquet")
    remote = frames["simulated-remote"]
    assert set(remote["prompt_pass"]) == {"run again"} and set(remote["backend"]) == {"simulated-remote"}
    np.testing.assert_allclose(remote["glass_delta"], frames["local"]["glass_delta"], rtol=1e-4, atol=1e-5)


def test_run_with_ablation_on_writes_the_scripts_table(tmp_path):
    """``[evaluation] ablation = true``: the run writes results/ablation.parquet, equal to
    the table scripts/ablation.py computes on the finished run; its baseline equals the
    sweep's unsteered logit diffs (another engine) and its layer the best layer. Without
    the field, no table."""
    from remote_steer.run.ablation_stage import ablation
    from remote_steer.run.runner import prepare, run_experiment
    from remote_steer.run.spec import parse_spec

    text = SMALL_RUN.replace("seed = 1", f'seed = 1\noutput_dir = "{tmp_path}"')
    off = run_experiment(parse_spec(text, "depth.toml"), run_dir=tmp_path / "off")
    assert not (off.run_dir / "results" / "ablation.parquet").exists()
    spec = parse_spec(text.replace("chunk_items = 8", "chunk_items = 8\nablation = true"), "depth.toml")
    display = NullDisplay()
    outcome = run_experiment(spec, run_dir=tmp_path / "on", display=display)
    table = pd.read_parquet(outcome.run_dir / "results" / "ablation.parquet")
    again = ablation(prepare(spec), outcome.run_dir)
    pd.testing.assert_frame_equal(table[list(again.columns)], again, check_exact=False, rtol=1e-6)
    assert len(table) == 2
    display = NullDisplay()  # a rerun keeps the table: the same cells at the same best layers
    run_experiment(spec, run_dir=tmp_path / "on", display=display)
    assert any("ablation.parquet is up to date" in n for n in display.notes)
    pd.testing.assert_frame_equal(pd.read_parquet(outcome.run_dir / "results" / "ablation.parquet"), table)
    best = outcome.summary.set_index("dataset")["best_layer"]
    baseline = outcome.results.groupby("dataset")["baseline_logit_diff"].mean()
    for row in table.itertuples():
        assert row.direction_layer == best[row.dataset]
        scale = max(1.0, abs(baseline[row.dataset]))
        assert row.baseline_mean == pytest.approx(baseline[row.dataset], abs=1e-4 * scale)
    from remote_steer.report.build import build_report  # the report shows the table; without it, none

    report = build_report([outcome.run_dir], tmp_path / "report", n_boot=20, figures=False)
    assert sum(t.key == "ablation" for t in report.tables) == 1
    assert sum(t.key == "ablation" for t in build_report([off.run_dir], tmp_path / "r2", figures=False).tables) == 0


def test_ablation_skips_remote_models_with_one_note(tmp_path):
    from remote_steer.run.runner import run_experiment
    from remote_steer.run.spec import parse_spec

    text = SMALL_RUN.replace('dtype = "float32"', 'dtype = "float32"\nbackend = "simulated-remote"')
    spec = parse_spec(text.replace("chunk_items = 8", "chunk_items = 8\nablation = true"), "depth.toml")
    display = NullDisplay()
    outcome = run_experiment(spec, run_dir=tmp_path / "remote", display=display)
    notes = [n for n in display.notes if "Directional ablation" in n]
    assert notes == ["Directional ablation runs on local models only; skipped: toy/qwen3."]
    assert pd.read_parquet(outcome.run_dir / "results" / "ablation.parquet").empty


def test_predicted_window_sweeps_the_predicted_layers_only(tmp_path):
    """``layer_window = "predicted"``: each concept's sweep holds only the window around the
    layer predicted from its own decodability table (predict_layer, window: computed here
    from results/decodability.parquet), its rows equal the full sweep's at those layers,
    and the caveat is noted once."""
    from remote_steer.run.predicted_window import CAVEAT
    from remote_steer.run.runner import run_experiment
    from remote_steer.run.spec import parse_spec

    text = SMALL_RUN.replace("layers = [8]", "layers = [2, 3, 4, 5, 6, 7, 8, 9, 10]")
    full = run_experiment(parse_spec(text, "depth.toml"), run_dir=tmp_path / "full")
    display = NullDisplay()
    spec = parse_spec(text.replace("chunk_items = 8", 'chunk_items = 8\nlayer_window = "predicted"'), "d.toml")
    got = run_experiment(spec, run_dir=tmp_path / "predicted", display=display)
    assert display.notes.count(CAVEAT) == 1
    table = pd.read_parquet(got.run_dir / "results" / "decodability.parquet")
    key = ["dataset", "item_id", "layer", "strength"]
    for concept, curve in table.groupby("dataset"):
        layers = P.window(P.predict_layer(curve), list(range(2, 11)), 12)
        rows = got.results[got.results["dataset"] == concept].sort_values(key).reset_index(drop=True)
        assert sorted(rows["layer"].unique()) == layers
        assert any(f"{concept}: predicted layer" in n for n in display.notes)
        same = full.results[(full.results["dataset"] == concept) & full.results["layer"].isin(layers)]
        same = same.sort_values(key).reset_index(drop=True)
        np.testing.assert_allclose(rows["logit_diff"], same["logit_diff"], rtol=1e-5, atol=1e-5)
    assert len(got.results) < len(full.results)
    # scripts/predicted_window_check.py's numbers on these two runs: the window's best
    # Glass's delta is the full sweep's at that layer (same rows)
    cells = P.window_check(full.results, full.summary, got.results, got.summary).set_index("dataset")
    deltas = glass_deltas(full.results).set_index(["dataset", "layer", "strength"])["glass_delta"]
    for concept, cell in cells.iterrows():
        assert cell["configurations"] == 2 * len(cell["window_layers"]) and cell["full_configurations"] == 2 * 9
        assert cell["hit"] == (cell["full_best_layer"] in cell["window_layers"])
        at = deltas.loc[(concept, cell["window_best_layer"], 1.0)]
        assert cell["window_delta"] == pytest.approx(at, rel=1e-5, abs=1e-6)


def test_report_leaves_windowed_cells_out_of_the_predictor_comparison():
    from remote_steer.report.depth import _full_sweep_cells

    logit = pd.DataFrame({"model": ["m"] * 5, "dataset": ["a", "a", "a", "b", "b"], "layer": [1, 2, 3, 2, 3]})
    best = pd.DataFrame({"model": ["m", "m"], "dataset": ["a", "b"], "best_layer": [2, 3]})
    full, windowed = _full_sweep_cells(logit, best)
    assert list(full["dataset"]) == ["a"] and windowed == 1


def test_depth_figure_draws_the_mean_only_where_every_concept_was_swept():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from remote_steer.report.depth_plots import _steering

    deltas = pd.DataFrame(
        {
            "dataset": ["a", "a", "b", "b"],
            "layer_fraction": [0.4, 0.5, 0.5, 0.6],
            "strength": [1.0] * 4,
            "glass_delta": [1.0, 2.0, 4.0, 3.0],
        }
    )
    fig, ax = plt.subplots()
    _steering(ax, deltas, pd.DataFrame(), pd.DataFrame())
    (mean,) = [line for line in ax.get_lines() if line.get_label() == "steering Δ at +1"]
    assert list(mean.get_xdata()) == [0.5] and list(mean.get_ydata()) == [3.0]
    plt.close(fig)


def test_ablation_equals_a_hook_that_subtracts_the_projection():
    from remote_steer.engines.ablation import ablated_logit_diffs

    model = _small_toy("toy/qwen3")
    hf = hf_module(model)
    items = encode_items(model.tokenizer, make_items(5, seed=8))
    generator = torch.Generator().manual_seed(2)
    directions = torch.randn(2, model.hidden_size, generator=generator)
    got = ablated_logit_diffs(model, items, directions, batch_size=3, backend=Backend())

    def by_hook(item, unit):
        def project(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden - (hidden @ unit)[..., None] * unit
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        hooks = [layer.register_forward_hook(project) for layer in hf.model.layers] if unit is not None else []
        try:
            with torch.inference_mode():
                logits = hf(input_ids=torch.tensor([list(item.prompt_ids)])).logits[0, -1]
        finally:
            for hook in hooks:
                hook.remove()
        return float(logits[item.matching_token] - logits[item.other_token])

    units = [None, *(d / d.norm() for d in directions)]
    expected = np.array([[by_hook(it, u) for u in units] for it in items])
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=0)
    assert np.abs(got[:, 1:] - got[:, :1]).max() > 1e-3  # ablation moves the answer


def test_simulated_remote_readout_equals_local():
    """The readout's session body ships (simulated-remote: the kernel by value, remote_steer
    hidden while deserializing) and gives the local numbers, with the remote random basis."""
    model = _small_toy("toy/qwen3")
    items = encode_items(model.tokenizer, make_items(4, seed=5))
    basis = dec.readout_basis(model.hidden_size, remote=True, seed=0, dims=8)
    _, _, local = extract_caa_fast_readout(model, items, concept="c", batch_size=2, backend=Backend(), basis=basis)
    backend = Backend("simulated-remote")
    _, _, remote = extract_caa_fast_readout(model, items, concept="c", batch_size=2, backend=backend, basis=basis)
    assert local is not None and remote is not None
    for got, want in ((remote.positive, local.positive), (remote.negative, local.negative), (remote.lens, local.lens)):
        torch.testing.assert_close(got, want, atol=1e-5 * max(1.0, float(want.abs().max())), rtol=0)
    assert backend.traffic["extraction"].requests == 1
