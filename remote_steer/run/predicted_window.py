"""``[evaluation] layer_window = "predicted"`` (docs/depth.md "Layer predictor"): after a
concept's extraction pass, its sweep runs only at the sweep layers in the window around
the layer predicted from that pass's decodability (``analysis/layer_predictor.py``),
per model × concept. The prediction is known only after the extraction; ``plan`` can
say only the most the window keeps.
"""

from __future__ import annotations

from remote_steer.analysis.decodability import DECODABILITY_TABLE
from remote_steer.analysis.layer_predictor import HALF_WIDTH, predict_layer, window
from remote_steer.display import Display
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.models.registry import layer_depth
from remote_steer.rundir import RunDir
from remote_steer.rundir.files import read_parquet

PREDICTED = "predicted"
CAVEAT = (
    'layer_window = "predicted": each concept sweeps only the layers within '
    f"{HALF_WIDTH:.0%} of the depth around the layer its extraction's decodability "
    "predicts. Measured on SmolLM2-135M and Gemma 3 270M, that window held the full "
    "sweep's best layer in half the cells, no better than a random window of its size "
    "(docs/depth.md): the best layer found is the window's best."
)


def window_configs(
    spec, store: RunDir, prepared, concept: str, configs: list[SteerConfig], display: Display
) -> list[SteerConfig]:
    """``configs`` as the spec sweeps them for ``prepared`` × ``concept``: all of them, or with
    ``layer_window = "predicted"`` cut to the predicted window (all of them, with a note,
    when its extraction pass left no decodability: the plain engine, or vectors extracted
    before decodability was recorded)."""
    if spec.evaluation.layer_window != PREDICTED:
        return configs
    name = prepared.spec.label
    part = store.part_path(DECODABILITY_TABLE, name, concept, 0)
    curve = read_parquet(part) if part.exists() else None
    if curve is None or curve.empty:
        display.note(f"{name} · {concept}: no decodability from its extraction pass; the whole sweep runs")
        return configs
    predicted = predict_layer(curve)
    layers = window(predicted, list(prepared.sweep_layers), prepared.n_layers)
    kept = [c for c in configs if c.layer in layers]
    display.note(
        f"{name} · {concept}: predicted layer {predicted} (depth {layer_depth(predicted, prepared.n_layers):.2f}); "
        f"sweeping layers {', '.join(map(str, layers))}: {len(kept)} of {len(configs)} configurations"
    )
    return kept


def possible_windows(sweep_layers: list[int], n_layers: int) -> list[list[int]]:
    """The window for every layer the prediction could be."""
    return [window(p, sweep_layers, n_layers) for p in range(n_layers)]


def most_kept(sweep_layers: list[int], n_layers: int) -> int:
    """The most sweep layers a window keeps, over every layer the prediction could be."""
    return max(len(w) for w in possible_windows(sweep_layers, n_layers))
