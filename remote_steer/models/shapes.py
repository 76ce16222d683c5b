"""Random-weight models with a registry model's shape: the study's depths, no download.

``shape_config("Qwen3-4B")`` is a transformers config with that model's depth,
heads, key/value heads, head size, vocabulary and tied embeddings (and, for MoE
models, experts); ``hidden`` scales the width only (hidden size, MLP and expert
sizes in proportion; head count kept, head size = hidden / heads). Used by
``remote-steer bench --shape`` (a checkpoint directory in the toy cache, CPU) and
``tests/gpu_check.py`` (built in memory on the GPU at full size).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from remote_steer.errors import ModelError
from remote_steer.models.staging import build_atomically

# What config.json says beyond the registry card (Qwen3 technical report / hub configs).
_EXTRA: dict[str, dict[str, Any]] = {
    "Qwen3-4B": {"head_dim": 128, "intermediate_size": 9728},
    "Qwen3-8B": {"head_dim": 128, "intermediate_size": 12288},
    "Qwen3-14B": {"head_dim": 128, "intermediate_size": 17408},
    "Qwen3-32B": {"head_dim": 128, "intermediate_size": 25600},
    # the matched pair (registry.MATCHED_PAIR's comment cites the configs): Qwen2, no head_dim key
    "Qwen2.5-32B-Instruct": {"head_dim": 128, "intermediate_size": 27648, "vocab_size": 152064},
    "QwQ-32B": {"head_dim": 128, "intermediate_size": 27648, "vocab_size": 152064},
    "DeepSeek-R1-Distill-Qwen-32B": {"head_dim": 128, "intermediate_size": 27648, "vocab_size": 152064},
    "Qwen3-30B-A3B": {
        "head_dim": 128,
        "intermediate_size": 6144,
        "moe_intermediate_size": 768,
        "num_experts": 128,
        "num_experts_per_tok": 8,
    },
    "Qwen3-235B-A22B": {
        "head_dim": 128,
        "intermediate_size": 12288,
        "moe_intermediate_size": 1536,
        "num_experts": 128,
        "num_experts_per_tok": 8,
    },
    "small/smollm2-135m-instruct": {"head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152},
    # NDIF's dedicated models (registry.NDIF_MODELS's comment cites the configs)
    **{
        name: {"head_dim": 128, "intermediate_size": mlp, "vocab_size": 128256}
        for name, mlp in (
            ("Llama-3.1-8B", 14336),
            ("Llama-3.1-8B-Instruct", 14336),
            ("Llama-3.1-70B", 28672),
            ("Llama-3.1-70B-Instruct", 28672),
            ("Llama-3.3-70B-Instruct", 28672),
            ("Llama-3.1-405B", 53248),
        )
    },
    "Olmo-3-1025-7B": {"head_dim": 128, "intermediate_size": 11008, "vocab_size": 100278},
}
SHAPE_SEED = 4321
SHAPE_BUILD_VERSION = 1


def shape_config(name: str, hidden: int | None = None, dtype: str = "float32"):
    """The config of a random-weight model shaped like registry model ``name``."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig

    from remote_steer.models.registry import lookup

    card = lookup(name)
    if card is None or card.toy or card.name not in _EXTRA:
        known = ", ".join(_EXTRA)
        raise ModelError(f"--shape {name!r}: expected a registry model, one of {known}")
    extra = _EXTRA[card.name]
    full = card.hidden_size
    width = hidden or full
    if width % card.n_heads or (width // card.n_heads) % 2:
        raise ModelError(f"--hidden {width}: expected a multiple of 2 × {card.n_heads} (the model's heads)")
    scale = width / full
    head_dim = extra["head_dim"] if hidden is None else width // card.n_heads
    common: dict[str, Any] = dict(  # keyword arguments of mixed types
        vocab_size=extra.get("vocab_size", 151936),
        hidden_size=width,
        num_hidden_layers=card.n_layers,
        num_attention_heads=card.n_heads,
        num_key_value_heads=card.n_kv_heads,
        head_dim=head_dim,
        intermediate_size=max(8, int(round(extra["intermediate_size"] * scale))),
        max_position_embeddings=4096,
        tie_word_embeddings=card.tied_embeddings,
        dtype=dtype,
    )
    if card.architecture == "olmo3":
        from transformers import Olmo3Config

        return Olmo3Config(**common, rms_norm_eps=1e-6, sliding_window=4096, pad_token_id=100277)
    if card.architecture == "llama":
        return LlamaConfig(
            **common,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
    qwen: dict[str, Any] = dict(
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
    )
    if card.architecture == "qwen2":
        common.pop("head_dim")  # Qwen2 derives it: hidden / heads
        return Qwen2Config(**common, **qwen, use_sliding_window=False)
    if card.moe:
        return Qwen3MoeConfig(
            **common,
            **qwen,
            moe_intermediate_size=max(8, int(round(extra["moe_intermediate_size"] * scale))),
            num_experts=extra["num_experts"],
            num_experts_per_tok=extra["num_experts_per_tok"],
            decoder_sparse_step=1,
            mlp_only_layers=[],
            norm_topk_prob=True,
        )
    return Qwen3Config(**common, **qwen)


def flops_per_token_layer(config, context: float) -> float:
    """Multiply-add FLOPs (×2) of one token through one decoder layer at ``context`` keys:
    the projections and MLP (active experts only for MoE) plus attention scores and values."""
    h = config.hidden_size
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    d = getattr(config, "head_dim", None) or h // heads
    attn_proj = h * heads * d * 2 + h * kv * d * 2  # q, o; k, v
    experts = getattr(config, "num_experts", None)
    if experts:
        expert = getattr(config, "moe_intermediate_size", None) or config.intermediate_size  # Mixtral: the latter
        mlp = 3 * h * expert * config.num_experts_per_tok + h * experts  # + router
    else:
        mlp = 3 * h * config.intermediate_size
    attention = 2 * heads * d * context  # q·k and p·v
    return 2.0 * (attn_proj + mlp + attention)


def vocab_row_flops(config) -> float:
    return 2.0 * config.hidden_size * config.vocab_size


def shape_dir(name: str, hidden: int | None) -> Path:
    from remote_steer.models.toy import cache_root

    slug = name.replace("/", "--")
    return cache_root() / "shapes" / f"{slug}-H{hidden or 'full'}-v{SHAPE_BUILD_VERSION}-seed{SHAPE_SEED}"


def ensure_shape(name: str, hidden: int | None = None) -> Path:
    """A random-weight checkpoint shaped like ``name`` (float32, CPU), cached; its directory.

    The tokenizer is the real one of that family: the toys' Qwen3 tokenizer, or the
    embedded SmolLM2's. Full-size shapes of the large models do not belong on disk:
    use ``build_in_memory`` on a GPU instead.
    """
    target = shape_dir(name, hidden)
    if (target / "remote_steer_shape.json").exists():
        return target
    from transformers import AutoModelForCausalLM

    config = shape_config(name, hidden)

    def fill(staging: Path) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SHAPE_SEED)
            model = AutoModelForCausalLM.from_config(config)
        model.eval().save_pretrained(staging)
        _save_tokenizer(config, staging)
        (staging / "remote_steer_shape.json").write_text(
            json.dumps({"shape": name, "hidden": hidden, "random_weights": True})
        )

    return build_atomically(target, fill)


def _save_tokenizer(config, directory: Path) -> None:
    if config.model_type == "llama":
        from transformers import AutoTokenizer

        from remote_steer.models.real_small import ensure_real

        AutoTokenizer.from_pretrained(ensure_real()).save_pretrained(directory)
    else:
        from remote_steer.models.toy_tokenizer import save_qwen3_tokenizer

        save_qwen3_tokenizer(directory)


def build_in_memory(name: str, hidden: int | None = None, dtype=torch.bfloat16, device: str = "cuda"):
    """The shaped model built directly on ``device`` in ``dtype`` (no disk, no download).
    ``device="auto"`` builds on the CPU's meta device and dispatches over all GPUs."""
    from transformers import AutoModelForCausalLM

    config = shape_config(name, hidden, dtype=str(dtype).replace("torch.", ""))
    torch.manual_seed(SHAPE_SEED)
    if device == "auto":
        from accelerate import dispatch_model, infer_auto_device_map

        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(config, dtype=dtype)
        device_map = infer_auto_device_map(
            meta, no_split_module_classes=[type(meta.model.layers[0]).__name__], dtype=dtype
        )
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # on CPU, then dispatched
        return dispatch_model(model.eval(), device_map=device_map)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()
