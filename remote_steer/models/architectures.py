"""What the engines need to know about each decoder architecture, in one table.

One row per transformers ``model_type``: where the decoder layers, final norm,
unembedding, embedding and rotary embedding live; how the residual stream is scaled
on the way in; whether the logits are soft-capped; which attention mask each layer
takes; whether there is one rotary embedding per attention kind; whether the MLP is
a mixture of experts. The engines read this table instead of branching on the
architecture, and the fast path's kernels receive the per-model part of it as plain
data (``kernel_layout``): they cannot import this package on a remote server.

Facts are as of transformers 5.x (checked against its modelling code):

- every architecture here is ``<X>ForCausalLM`` with ``model.embed_tokens``,
  ``model.layers``, ``model.norm``, ``model.rotary_emb`` and ``lm_head``;
- Gemma 2 and 3 multiply the token embeddings by sqrt(hidden) *inside* the embedding
  module (``Gemma*TextScaledWordEmbedding``), so calling ``embed_tokens`` yields the
  residual stream's first state; ``fast_path_refusal`` checks that it still does;
- Gemma 2 soft-caps the final logits (``final_logit_softcapping``: cap · tanh(x / cap)),
  Gemma 3 can (``None`` in the released configs);
- attention masks: Qwen2/Qwen3/Gemma 2/Gemma 3 name each layer's kind in
  ``config.layer_types``; Mistral, Mixtral, Phi-3 and Qwen3-MoE slide every layer
  when ``config.sliding_window`` is set and none otherwise; Llama and OLMo 2 are causal;
- Gemma 3 has one rotary embedding per attention kind (``rotary_emb(x, pos, kind)``);
- OLMo 2 normalises after attention and MLP instead of before (inside the layer: the
  decoder-layer output is still the residual stream, nothing changes for steering).

A model whose ``model_type`` is not here, or whose layout does not match its row,
is run by the plain engines (every number from the model's own forward pass); the
run says so in one line (``fast_path_refusal``). Never a silently wrong number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FULL = "full_attention"
SLIDING = "sliding_attention"


@dataclass(frozen=True)
class Architecture:
    """One row of the table (see the module docstring)."""

    model_type: str
    family: str  # for tables: who makes it
    attention: str  # "causal" | "layer_types" | "sliding_window" (see ``layer_kinds``)
    layers: str = "model.layers"
    final_norm: str = "model.norm"
    unembedding: str = "lm_head"
    embedding: str = "model.embed_tokens"
    rotary: str = "model.rotary_emb"
    embedding_scale: str | None = None  # "sqrt(hidden)": applied inside the embedding module
    logit_softcap: bool = False  # reads config.final_logit_softcapping
    rotary_per_kind: bool = False  # rotary_emb(x, position_ids, layer_kind)
    norm_placement: str = "pre"  # "pre" | "post" (inside the layer; informational)
    moe: bool = False
    # random-weight toy: config fields beyond the shared shape (models/toy.py)
    toy: dict[str, Any] = field(default_factory=dict)


_SMALL_WINDOW = 8  # toys: a sliding window shorter than every test prompt, so it really slides

ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in (
        Architecture("qwen3", "Qwen", "layer_types"),
        Architecture(
            "qwen3_moe",
            "Qwen",
            "sliding_window",
            moe=True,
            toy={
                "moe_intermediate_size": 32,
                "num_experts": 8,
                "num_experts_per_tok": 2,
                "decoder_sparse_step": 1,
                "mlp_only_layers": [],
                "norm_topk_prob": True,
            },
        ),
        Architecture("qwen2", "Qwen", "layer_types", toy={"use_sliding_window": False}),
        Architecture("llama", "Meta", "causal"),
        Architecture("mistral", "Mistral", "sliding_window", toy={"sliding_window": _SMALL_WINDOW}),
        Architecture(
            "mixtral",
            "Mistral",
            "sliding_window",
            moe=True,
            toy={"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": None},
        ),
        Architecture(
            "gemma2",
            "Google",
            "layer_types",
            embedding_scale="sqrt(hidden)",
            logit_softcap=True,
            toy={
                "sliding_window": _SMALL_WINDOW,
                "layer_types": [SLIDING, FULL, SLIDING, FULL],
                "query_pre_attn_scalar": 16,
                # far below the released 30 / 50, so that a missing cap shows in every number
                "final_logit_softcapping": 0.5,
                "attn_logit_softcapping": 5.0,
            },
        ),
        Architecture(
            "gemma3_text",
            "Google",
            "layer_types",
            embedding_scale="sqrt(hidden)",
            logit_softcap=True,
            rotary_per_kind=True,
            toy={
                "sliding_window": _SMALL_WINDOW,
                "layer_types": [SLIDING, SLIDING, FULL, SLIDING],
                "query_pre_attn_scalar": 16,
                "rope_parameters": {
                    SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
                    FULL: {"rope_type": "default", "rope_theta": 1_000_000.0},
                },
            },
        ),
        Architecture("phi3", "Microsoft", "sliding_window", toy={"sliding_window": None}),
        Architecture("olmo2", "AllenAI", "causal", norm_placement="post"),
    )
}


def architecture(model_type: str) -> Architecture | None:
    return ARCHITECTURES.get(model_type)


def text_config(config: Any) -> Any:
    return getattr(config, "text_config", config)


def layer_kinds(arch: Architecture, config: Any) -> list[str]:
    """Each decoder layer's attention mask: ``full_attention`` or ``sliding_attention``."""
    config = text_config(config)
    n = int(config.num_hidden_layers)
    if arch.attention == "layer_types":
        return [str(kind) for kind in (getattr(config, "layer_types", None) or [FULL] * n)]
    if arch.attention == "sliding_window" and getattr(config, "sliding_window", None) is not None:
        return [SLIDING] * n
    return [FULL] * n


def logit_softcap(arch: Architecture, config: Any) -> float | None:
    if not arch.logit_softcap:
        return None
    cap = getattr(text_config(config), "final_logit_softcapping", None)
    return None if cap is None else float(cap)


def module(root: Any, path: str) -> Any:
    """``root``'s submodule (or nnsight envoy) at a dotted ``path``."""
    for part in path.split("."):
        root = getattr(root, part)
    return root


def kernel_layout(arch: Architecture, config: Any) -> dict[str, Any]:
    """The per-model facts the in-trace kernels need, as plain data (they ship to a server)."""
    kinds = layer_kinds(arch, config)
    return {
        "kinds": kinds,
        "sliding": SLIDING in kinds,
        "rotary_per_kind": arch.rotary_per_kind,
        "softcap": logit_softcap(arch, config),
    }


def fast_path_refusal(hf_model: Any) -> str | None:
    """Why the fast engines cannot run this transformers model (one line), or None if they can."""
    config = text_config(hf_model.config)
    model_type = getattr(config, "model_type", None)
    arch = architecture(str(model_type))
    if arch is None:
        known = ", ".join(sorted(ARCHITECTURES))
        return f"architecture {model_type!r} is not in the fast path's table ({known})"
    try:
        for path in (arch.layers, arch.final_norm, arch.unembedding, arch.embedding, arch.rotary):
            module(hf_model, path)
    except AttributeError:
        return f"{model_type}: the modules are not where the table expects them (transformers changed the layout?)"
    if arch.embedding_scale is not None and not hasattr(module(hf_model, arch.embedding), "embed_scale"):
        return f"{model_type}: the embedding no longer scales itself by {arch.embedding_scale}"
    if getattr(config, "use_bidirectional_attention", False):
        return f"{model_type}: bidirectional attention (the fast path relies on causal attention)"
    if arch.logit_softcap is False and getattr(config, "final_logit_softcapping", None) is not None:
        return f"{model_type}: soft-capped logits the table does not expect"
    kinds = layer_kinds(arch, config)
    unknown = sorted(set(kinds) - {FULL, SLIDING})
    if unknown:
        return f"{model_type}: attention kinds {unknown} (the fast path knows full and sliding-window attention)"
    return None
