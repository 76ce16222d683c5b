"""``remote-steer plan`` counts what a run will send: checked against a run's own traffic."""

from __future__ import annotations

import json

import pytest
from conftest import toy_spec_text

from remote_steer.run.plan import _strongest_pair, plan_experiment
from remote_steer.run.runner import run_experiment
from remote_steer.run.spec import parse_spec

SPEC = toy_spec_text(
    "planned",
    head="seed = 1",
    max_items=10,
    model="layers = [6, 9]\nstrengths = [-2.0, 2.0, 4.0]",
    layers=(4, 8, 11),
    tail="batch_size = 16\nchunk_items = 2\n[controls]\nrandom = 1\nshuffled = 1",
)


def test_plan_requests_equal_the_runs_requests_with_controls_and_overrides(tmp_path):
    spec = parse_spec(SPEC.replace("seed = 1", f'seed = 1\noutput_dir = "{tmp_path}"'), "planned.toml")
    (plan,), estimated = plan_experiment(spec)
    assert not estimated and plan.sweep_layers == 2  # the model's own layers, not evaluation.layers
    outcome = run_experiment(spec)
    traffic = json.loads((outcome.run_dir / "manifest.json").read_text())["traffic"]["toy/qwen3"]
    made = sum(stage["requests"] for stage in traffic.values())
    # 1 extraction + 3 sweep chunks (5 held-out items, 2 per chunk), the controls in them
    assert made == 4
    assert plan.requests == made


def test_plan_counts_the_letter_control_for_real_models(tmp_path):
    toy = parse_spec(SPEC, "planned.toml")
    real = parse_spec(SPEC.replace('name = "toy/qwen3"', 'name = "small/smollm2-135m-instruct"'), "planned.toml")
    (toy_plan,), _ = plan_experiment(toy)
    (real_plan,), _ = plan_experiment(real)
    assert _strongest_pair((-2.0, 2.0, 4.0)) == [4.0]
    # the letter control rides on the extraction and the sweep's requests: no request of its
    # own, but one more vector each way and its rows in the sweep's requests
    assert real_plan.requests == toy_plan.requests
    assert real_plan.bytes_sent > toy_plan.bytes_sent and real_plan.bytes_received > toy_plan.bytes_received


@pytest.mark.parametrize("modes", ['["generation"]'])
def test_plan_counts_no_sweep_without_the_logit_mode(modes):
    spec = parse_spec(SPEC.replace("chunk_items = 2", f"chunk_items = 2\nmodes = {modes}"), "planned.toml")
    (plan,), _ = plan_experiment(spec)
    assert plan.requests == 1  # the extraction only; generation has its own table


def test_plan_says_the_most_the_predicted_window_keeps():
    """``layer_window = "predicted"``: the most sweep layers any window keeps (by hand: 12
    layers, ±15 % depth = ±1.8 layers, so a window of the sweep 2..10 holds at most 3)."""
    from remote_steer.run.plan_tables import depth_notes

    text = SPEC.replace("layers = [6, 9]\n", "").replace("layers = [4, 8, 11]", "layers = [2, 3, 4, 5, 6, 7, 8, 9, 10]")
    spec = parse_spec(text.replace("chunk_items = 2", 'chunk_items = 2\nlayer_window = "predicted"'), "p.toml")
    (plan,), _ = plan_experiment(spec)
    assert plan.window_layers == 3 and plan.sweep_layers == 9
    (line,) = [n for n in depth_notes(spec, [plan]) if n.startswith("Predicted layer window")]
    assert "at most 3 of 9 sweep layers" in line and "67%" in line and "only after" in line
    (default,), _ = plan_experiment(parse_spec(text, "p.toml"))
    assert default.window_layers is None
