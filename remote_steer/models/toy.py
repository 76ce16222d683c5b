"""Embedded toy models: real transformers Qwen3 classes at tiny size, random weights.

They exist so that the whole pipeline (tokenizer, chat template, nnsight tracing,
steering, results) runs offline on a laptop CPU. Their numbers mean nothing about
Qwen3; every place that shows them marks them as random-weight toys.

A toy is built on first use from a fixed seed and saved as an ordinary Hugging Face
checkpoint directory (config, safetensors weights, tokenizer), so it then loads
through exactly the same code path as a real local checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from remote_steer.models.registry import require_toy
from remote_steer.models.staging import build_atomically

# Bump when a toy's architecture or build changes, so old caches are not reused.
TOY_BUILD_VERSION = 1
TOY_SEED = 1234
_VOCAB_SIZE = 151936  # Qwen3's embedding rows (tokenizer ids go up to 151668)


def cache_root() -> Path:
    """Where built toys live: ``$REMOTE_STEER_CACHE`` or ``~/.cache/remote-steer``."""
    env = os.environ.get("REMOTE_STEER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "remote-steer"


def _arch_config(card, n_layers: int | None, hidden_size: int | None):
    """An architecture-coverage toy (``registry.ARCH_TOYS``): the architecture's own transformers
    config at the toy's size, with the table's toy fields (``architectures.py``)."""
    from transformers import AutoConfig

    from remote_steer.models.architectures import ARCHITECTURES

    arch = ARCHITECTURES[card.architecture]
    layers = n_layers or card.n_layers
    hidden = hidden_size or card.hidden_size
    heads = card.n_heads if hidden_size is None else max(2, hidden // 32)
    head_dim = hidden // heads
    extra = dict(arch.toy)
    if "layer_types" in extra:  # the toy's attention pattern, tiled to the depth
        pattern = extra["layer_types"]
        extra["layer_types"] = [pattern[i % len(pattern)] for i in range(layers)]
    if "query_pre_attn_scalar" in extra:
        extra["query_pre_attn_scalar"] = head_dim
    if "moe_intermediate_size" in extra:
        extra["moe_intermediate_size"] = hidden // 2
    extra.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": 10_000.0})
    return AutoConfig.for_model(
        card.architecture,
        vocab_size=_VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=head_dim,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
        tie_word_embeddings=card.tied_embeddings,
        dtype="float32",
        **extra,
    )


def _config(name: str, n_layers: int | None = None, hidden_size: int | None = None):
    """The transformers config of a toy. ``n_layers``/``hidden_size`` resize it (benchmarks)."""
    from transformers import Qwen3Config, Qwen3MoeConfig

    card = require_toy(name)
    if card.architecture != "qwen3":
        return _arch_config(card, n_layers, hidden_size)
    layers = n_layers or card.n_layers
    hidden = hidden_size or card.hidden_size
    heads = card.n_heads if hidden_size is None else max(2, hidden // 32)
    common: dict[str, Any] = dict(  # keyword arguments of mixed types
        vocab_size=_VOCAB_SIZE,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=hidden // heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
        tie_word_embeddings=card.tied_embeddings,
        dtype="float32",
    )
    if card.moe:
        return Qwen3MoeConfig(
            **common,
            intermediate_size=3 * hidden,
            moe_intermediate_size=hidden // 2,
            num_experts=8,
            num_experts_per_tok=2,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            norm_topk_prob=True,
        )
    return Qwen3Config(**common, intermediate_size=3 * hidden)


def toy_dir(name: str, n_layers: int | None = None, hidden_size: int | None = None) -> Path:
    size = "" if n_layers is None and hidden_size is None else f"-L{n_layers}-H{hidden_size}"
    slug = name.replace("/", "--")
    return cache_root() / "toys" / f"{slug}{size}-v{TOY_BUILD_VERSION}-seed{TOY_SEED}"


def ensure_toy(name: str, n_layers: int | None = None, hidden_size: int | None = None) -> Path:
    """Build the toy checkpoint if it is not cached yet; return its directory.

    The build writes to a temporary sibling directory and renames it into place, so
    an interrupted build never leaves a half-written checkpoint behind.
    """
    target = toy_dir(name, n_layers, hidden_size)
    if (target / "remote_steer_toy.json").exists():
        return target
    from transformers import AutoModelForCausalLM

    from remote_steer.models.toy_tokenizer import save_qwen3_tokenizer

    config = _config(name, n_layers, hidden_size)

    def fill(staging: Path) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TOY_SEED)
            model = AutoModelForCausalLM.from_config(config)
        model.eval()
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no stray "Writing model shards" bar: the caller says what happens
        model.save_pretrained(staging)
        save_qwen3_tokenizer(staging)
        digest = hashlib.sha256((staging / "model.safetensors").read_bytes()).hexdigest()
        info = {
            "name": name,
            "build_version": TOY_BUILD_VERSION,
            "seed": TOY_SEED,
            "weights_sha256": digest,
            "random_weights": True,
        }
        (staging / "remote_steer_toy.json").write_text(json.dumps(info, indent=2))

    return build_atomically(target, fill)


def toy_revision(path: Path) -> str:
    """A toy's revision: its build version and the hash of its weights."""
    info = json.loads((path / "remote_steer_toy.json").read_text())
    return f"toy-v{info['build_version']}-seed{info['seed']}-sha256:{info['weights_sha256'][:16]}"
