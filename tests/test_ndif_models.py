"""NDIF's dedicated models (issue 27): registry cards, offline plan, and Llama 3's chat
template and answer-token rule on a real Llama 3 tokenizer.

The tokenizer: the meta-llama repos are gated, so Llama 3's byte-level BPE is rebuilt
offline from the ``quicktok-v1`` package, which ships the Llama 3 encoding (128,000 BPE
ranks; the same ids as the hub's tokenizer.json, e.g. "Hello" 9906, " world" 1917), with
Llama 3's pre-tokenization regex, its special tokens at their real ids (128000…128255)
and the Llama 3.1 Instruct chat template (tools branch left out; the rendered text for
a plain conversation is the hub template's, knowledge-cutoff system turn included).
Without quicktok those tests skip, saying why.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import make_items
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.models.registry import NDIF_MODELS, lookup

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC = REPO_ROOT / "experiments" / "ndif-llama.toml"
INSTRUCT = ["Llama-3.1-8B-Instruct", "Llama-3.1-70B-Instruct", "Llama-3.3-70B-Instruct"]

# Llama 3's pre-tokenization regex (tokenizer.json's Split pattern; digits in runs of 1–3).
LLAMA3_PAT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
LLAMA31_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + (date_string if date_string is defined else '26 Jul 2024') + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
    "'<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def test_cards_match_the_published_configs():
    """Parameter counts follow from the cited shapes (embeddings untied, no biases, RMSNorm
    weights; OLMo 3 adds a query and a key norm per layer): 8,030,261,248 for Llama 3.1 8B,
    7,298,011,136 for OLMo 3 7B, as published."""
    from remote_steer.models.shapes import shape_config

    def count(config) -> int:
        h, d = config.hidden_size, config.head_dim
        attention = h * config.num_attention_heads * d * 2 + h * config.num_key_value_heads * d * 2
        qk_norm = 2 * h if config.model_type == "olmo3" else 0
        layer = attention + 3 * h * config.intermediate_size + 2 * h + qk_norm
        return layer * config.num_hidden_layers + 2 * config.vocab_size * h + h

    assert count(shape_config("Llama-3.1-8B-Instruct")) == 8_030_261_248
    assert count(shape_config("Olmo-3-1025-7B")) == 7_298_011_136
    for card in NDIF_MODELS:
        config = shape_config(card.name)
        assert config.num_hidden_layers == card.n_layers and config.hidden_size == card.hidden_size
        assert count(config) / 1e9 == pytest.approx(card.params_total_b, rel=0.01), card.name
        assert card.default_backend == "remote" and card.chat_template
        assert card.training == ("sft+rlhf" if card.name.endswith("Instruct") else "base")
    assert lookup("meta-llama/Llama-3.1-70B-Instruct").n_layers == 80  # the hub id finds the card
    assert lookup("Llama-3.1-405B").n_layers == 126 and lookup("Llama-3.1-405B-Instruct") is None


def test_plan_of_ndif_llama_is_offline_and_names_every_model(monkeypatch):
    """Every model with its layers, swept layers, requests and bytes each way, and the memory
    table's weights, with the hub and the network unreachable."""
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    result = CliRunner().invoke(app, ["plan", str(SPEC)], env={"COLUMNS": "250", "HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    layers = {"Llama-3.1-8B-Instruct": 32, "Llama-3.1-70B-Instruct": 80, "Llama-3.3-70B-Instruct": 80}
    for name, n in layers.items():
        line = next(line for line in result.output.splitlines() if name in line and "MB" in line)
        cells = [cell.strip() for cell in line.split("│") if cell.strip()]
        swept = n - int(0.33 * n)  # from a third of the depth (layer 10 of 32) to the last layer
        assert cells[6:8] == [str(n), str(swept)], cells
        assert int(cells[9]) > 0 and re.fullmatch(r"\d+ MB", cells[11]) and re.fullmatch(r"\d+ MB", cells[12]), cells
        memory = next(line for line in result.output.splitlines() if name in line and "server" in line)
        weights = float([cell.strip() for cell in memory.split("│") if cell.strip()][3])
        assert weights == pytest.approx(2 * lookup(name).params_total_b, rel=0.02)  # bf16 on the server


def test_spec_runs_the_served_instruct_models_at_depth_fractions():
    from remote_steer.run.spec import load_spec

    spec = load_spec(SPEC)
    assert [m.name for m in spec.models] == INSTRUCT
    assert {m.backend for m in spec.models} == {"remote"}
    assert spec.evaluation.layers is None and spec.evaluation.layer_start_fraction == pytest.approx(0.33)
    assert spec.generation.layer_fractions is not None and len(spec.data.concepts) == 6


def _llama3_tokenizer():
    quicktok = pytest.importorskip("quicktok", reason="quicktok-v1 (Llama 3's encoding, offline) not installed")
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    from remote_steer.models.toy_tokenizer import vocab_and_merges

    encoding = quicktok.get_encoding("llama3")
    ranks = {encoding.decode_single_token_bytes(i): i for i in range(128_000)}
    vocab, merges = vocab_and_merges(ranks)
    backend = Tokenizer(BPE(vocab, merges, fuse_unk=False))
    backend.model.ignore_merges = True
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PAT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    for i in range(128_000, 128_256):
        token = encoding.decode_single_token_bytes(i).decode()
        backend.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        assert backend.token_to_id(token) == i
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        chat_template=LLAMA31_TEMPLATE,
        name_or_path="meta-llama/Llama-3.1-8B-Instruct (rebuilt from quicktok)",
    )


def test_llama3_chat_template_and_answer_tokens():
    """The prompt ends with the assistant header; the answer tokens are "(A" and "(B", one
    token each (ids 4444 and 5462), as Llama 3 splits them after that header."""
    from remote_steer.data.prompts import encode_item

    tok = _llama3_tokenizer()
    assert tok.encode("Hello world", add_special_tokens=False) == [9906, 1917]  # Llama 3's own ids
    ids = {"A": 4444, "B": 5462}
    for item in make_items(6, seed=5):
        encoded = encode_item(tok, item)
        text = tok.decode(list(encoded.prompt_ids))
        assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge")
        assert text.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
        assert item.user_prompt().strip() in text
        assert encoded.matching_token == ids[item.matching_letter]
        assert encoded.other_token == ids[item.other_letter]
        assert tok.decode([encoded.matching_token]) == f"({item.matching_letter}"


def test_models_at_80_columns_is_one_short_table_per_family():
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80 and "parts)" not in result.output
    titles = [line.strip() for line in lines if line.strip().startswith(("Qwen", "Llama", "OLMo", "toy", "Smol"))]
    assert titles[:4] == ["Qwen3", "Qwen2.5 (all on Qwen2.5-32B)", "Llama 3", "OLMo 3"]
    row = next(line for line in lines if "Llama-3.1-405B " in line)
    assert [c.strip() for c in row.split("│")[1:-1]] == ["Llama-3.1-405B", "126", "405.9B", "base", "remote"]
    wide = CliRunner().invoke(app, ["models"], env={"COLUMNS": "250"}).output
    assert "meta-llama/Llama-3.1-405B" in wide and "16384" in wide and "128/8" in wide
