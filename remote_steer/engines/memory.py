"""Memory of the fast engine: what it holds, what fits, and sizing its blocks to fit.

The fast engine (``sweep_fast.py`` / ``fast_kernel.py``) holds, per group of
``g`` prompts of padded width ``w`` with a steered window of ``c`` columns:

- the prompt pass's key/value cache: ``layers × 2 × g × w × kv_heads × head_dim``;
- the residual stream of every layer over the window: ``layers × g × c × hidden``;

and, transiently, per staircase block of ``r`` rows (item × configuration), at one
layer at a time: a copy of that layer's prefix keys/values per row
(``2 × r × w × kv_heads × head_dim``; ``ReadOnlyKV`` concatenates prefix ⊕ window,
so twice that), the attention scores (``r × heads × c × (w + c)``) and the MLP's
intermediate activations (``r × c × intermediate``, × 3 for the gate, up and
product). ``fit_block_rows`` picks the largest block (≤ what was asked) whose
transient fits in ``fraction`` of the memory available on the model's device, so a
long-prompt sweep shrinks its blocks instead of running out of memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "auto": 2}


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    params: float  # total parameters
    bytes_per_value: int

    @classmethod
    def from_config(cls, config: Any, bytes_per_value: int = 4) -> Shape:
        text = getattr(config, "text_config", config)
        heads = int(text.num_attention_heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        experts = getattr(text, "num_experts", None)
        inter = int(expert_size(text)) * int(text.num_experts_per_tok) if experts else int(text.intermediate_size)
        return cls(
            layers=int(text.num_hidden_layers),
            hidden=int(text.hidden_size),
            heads=heads,
            kv_heads=int(getattr(text, "num_key_value_heads", heads)),
            head_dim=head_dim,
            intermediate=inter,
            vocab=int(text.vocab_size),
            params=float(_params(text)),
            bytes_per_value=bytes_per_value,
        )


def expert_size(text: Any) -> int:
    """One expert's MLP width: ``moe_intermediate_size`` (Qwen3-MoE) or ``intermediate_size`` (Mixtral)."""
    return int(getattr(text, "moe_intermediate_size", None) or text.intermediate_size)


def _params(text: Any) -> float:
    h, layers = text.hidden_size, text.num_hidden_layers
    heads = text.num_attention_heads
    d = getattr(text, "head_dim", None) or h // heads
    kv = getattr(text, "num_key_value_heads", heads)
    attn = h * heads * d * 2 + h * kv * d * 2
    experts = getattr(text, "num_experts", None)
    mlp = 3 * h * expert_size(text) * experts + h * experts if experts else 3 * h * text.intermediate_size
    embed = text.vocab_size * h * (1 if getattr(text, "tie_word_embeddings", False) else 2)
    return layers * (attn + mlp) + embed


def group_bytes(shape: Shape, group: int, width: int, window: int) -> int:
    """Held for a whole group: the prompt's key/value cache and the window's residuals."""
    cache = shape.layers * 2 * group * width * shape.kv_heads * shape.head_dim
    resid = shape.layers * group * window * shape.hidden
    return int((cache + resid) * shape.bytes_per_value)


def held_bytes(shape: Shape, items: int, prefix: int, window: int, layers: Sequence[int]) -> int:
    """What ``sweep_fast.HeldPrompts`` keeps of ``items`` prompt passes to steer them again at
    ``layers``: the window residual at those layers (and the first and last) and the prefix
    keys/values of the first layer and of every layer above the lowest of them."""
    resid = len(set(layers) | {0, shape.layers - 1}) * window * shape.hidden
    kv = (1 + shape.layers - 1 - min(layers)) * 2 * prefix * shape.kv_heads * shape.head_dim
    return int(items * (resid + kv) * shape.bytes_per_value)


def block_bytes(shape: Shape, rows: int, width: int, window: int) -> int:
    """Transient of one staircase block of ``rows`` rows at one layer."""
    kv = 2 * 2 * rows * (width + window) * shape.kv_heads * shape.head_dim  # per-row copy + prefix ⊕ window
    scores = rows * shape.heads * window * (width + window)
    mlp = 3 * rows * window * shape.intermediate
    hidden = 4 * rows * window * shape.hidden
    return int((kv + scores + mlp + hidden) * shape.bytes_per_value)


def available_bytes(device: Any = "cpu") -> int:
    """Free memory now: CUDA's free bytes on that device, else the OS's MemAvailable."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def fit_block_rows(shape: Shape, requested: int, width: int, window: int, available: int, fraction: float = 0.5) -> int:
    """The largest block size ≤ ``requested`` whose transient fits in ``fraction × available``
    (at least 1: one row is the floor; a row that does not fit fails as it would anyway)."""
    budget = fraction * available
    per_row = max(1, block_bytes(shape, 1, width, window))
    return max(1, min(requested, int(budget // per_row)))


def model_shape(model: Any) -> Shape:
    """The shape of a loaded model (``LoadedModel``), in its parameters' dtype."""
    hf = model.nn._module
    dtype = next(hf.parameters()).dtype
    return Shape.from_config(hf.config, dtype.itemsize)


def model_device(model: Any) -> Any:
    import torch

    try:
        return next(model.nn._module.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def peak_memory(shape: Shape, *, group: int, width: int, window: int, block_rows: int) -> dict[str, int]:
    """Weights, group state and block transient of a fast-engine sweep, in bytes."""
    weights = int(shape.params * shape.bytes_per_value)
    held = group_bytes(shape, group, width, window)
    transient = block_bytes(shape, block_rows, width, window)
    return {"weights": weights, "group": held, "block": transient, "total": weights + held + transient}
