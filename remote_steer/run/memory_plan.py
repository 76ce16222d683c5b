"""``remote-steer plan``'s memory table: peak memory per model and device, before a run.

Per model of a spec: the weights (parameters × bytes of the dtype; ``auto`` counted
as 2 bytes, the checkpoints' bf16), what the fast engine holds per group (prompt
key/value cache and window residuals) and the transient of one staircase block
(``engines/memory.py``), against the memory free on the model's device now. A
model whose weights plus one row do not fit is marked "no" (the run would fail
after loading); otherwise the fast engine shrinks its blocks to what fits. Remote
models run on the server: "server".
"""

from __future__ import annotations

from typing import Any

from remote_steer.engines import memory

_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "auto": 2}


def _config(name: str, revision: str | None) -> Any:
    from remote_steer.models.registry import lookup

    card = lookup(name)
    if card is not None and not card.toy:
        from remote_steer.models.shapes import shape_config

        try:
            return shape_config(card.name)
        except Exception:  # noqa: BLE001 - fall back to the checkpoint's config
            pass
    from remote_steer.models.loading import load_config, resolve

    try:
        return load_config(resolve(name, revision))
    except Exception:  # noqa: BLE001 - offline and not cached: unknown
        return None


def memory_rows(spec: Any, prompt_tokens: int = 160, window: int = 7) -> list[dict[str, Any]]:
    """One dict per model: device, dtype, weights / group / block / total GB, free GB, fits."""
    rows = []
    for model in spec.models:
        config = _config(model.name, model.revision)
        remote = model.backend == "remote"
        base = {"model": model.name, "device": "remote" if remote else model.device, "dtype": model.dtype}
        if config is None:
            rows.append(
                {
                    **base,
                    "weights_gb": None,
                    "group_gb": None,
                    "block_gb": None,
                    "total_gb": None,
                    "free_gb": None,
                    "fits": "?",
                }
            )
            continue
        shape = memory.Shape.from_config(config, _BYTES.get(model.dtype, 2))
        n_layers = shape.layers
        n_configs = max(1, len(spec.sweep_layers(n_layers)) * len(spec.evaluation.strengths))
        block = spec.evaluation.batch_size
        group = max(1, block // n_configs)
        win = prompt_tokens if spec.evaluation.positions == "all" else window
        peak = memory.peak_memory(shape, group=group, width=prompt_tokens, window=win, block_rows=block)
        free = (
            None
            if remote
            else memory.available_bytes("cuda" if model.device == "auto" else model.device)
            if (model.device == "cpu" or _cuda())
            else None
        )
        one_row = peak["weights"] + peak["group"] + memory.block_bytes(shape, 1, prompt_tokens, win)
        fits = (
            "server"
            if remote
            else (
                "?"
                if free is None
                else ("yes" if peak["total"] <= free else ("smaller blocks" if one_row <= free else "no"))
            )
        )
        rows.append(
            {
                **base,
                **{f"{k}_gb": v / 1e9 for k, v in peak.items()},
                "free_gb": None if free is None else free / 1e9,
                "fits": fits,
            }
        )
    return rows


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
