"""``remote-steer models`` and ``remote-steer datasets``: what the registry and a source hold."""

from __future__ import annotations

import typer

from remote_steer.cli.app import command


@command(short_help="List the study's models and the random-weight toys.")
def models() -> None:
    """List the registry's models grouped by family and base model: the Qwen3 study, the
    Qwen2.5-32B matched pair, the embedded real model and the random-weight toys."""
    from remote_steer.display import RichDisplay
    from remote_steer.models.registry import base_model, grouped_cards

    rows = [
        (
            c.family,
            base_model(c),
            c.name,
            "embedded (random-weight toy)" if c.toy else (f"embedded ({c.hub_id} GGUF)" if c.embedded else c.hub_id),
            c.n_layers,
            c.hidden_size,
            f"{c.n_heads}/{c.n_kv_heads}",
            f"{c.params_total_b:g}B" if not c.toy else f"{c.params_total_b * 1000:.0f}M",
            f"{c.params_active_b:g}B" if not c.toy else f"{c.params_active_b * 1000:.0f}M",
            c.kind,
            c.training,
            "yes" if c.tied_embeddings else "no",
            c.default_backend,
        )
        for c in grouped_cards()
    ]
    RichDisplay().table(
        "Models",
        [
            "family",
            "base",
            "model",
            "weights",
            "layers",
            "hidden",
            "heads q/kv",
            "params",
            "active",
            "type",
            "training",
            "tied emb.",
            "backend",
        ],
        rows,
        "Grouped by family, then by the base model each was post-trained from: models on one base "
        "(the Qwen2.5-32B matched pair) differ only in post-training. "
        "toy/* models have random weights from a fixed seed: for tests and the quickstart only. "
        "small/* are real trained models built offline from GGUF packages (SmolLM2-135M-Instruct, Llama "
        "architecture; Gemma 3 270M, pre-trained): not Qwen3, "
        "not a study model.",
    )


@command(short_help="List the concepts and whether a source has them.")
def datasets(
    source: str = typer.Option("fixtures", "--source", help='"fixtures", "hub", or a local model-written-evals root.'),
) -> None:
    """List the study's concepts, the files behind them and whether SOURCE has them."""
    from remote_steer.data.concepts import POLARITY
    from remote_steer.data.loading import list_concepts
    from remote_steer.display import RichDisplay

    entries = list_concepts(source)
    hub = source == "hub"
    missing = "no (not cached)" if hub else "no (missing)"
    rows = [
        (
            e["concept"],
            "yes" if e["available"] else missing,
            e["n_lines"] if e.get("n_lines") is not None else "—",
            "\n".join(str(f) for f in e["files"]),
        )
        for e in entries
    ]
    caption = ""
    if hub and not all(e["available"] for e in entries):
        caption = (
            "not cached: this command never goes online; `remote-steer run` downloads a hub file "
            "on first use when huggingface.co is reachable (offline it stops with the file's name)"
        )
    elif not all(e["available"] for e in entries):
        caption = f"missing: the file is not under {source} (or is a Git LFS pointer, not data)"
    display = RichDisplay()
    display.table(f"Concepts in {source}", ["concept", "available", "lines", "files"], rows, caption)
    display.table(
        "Polarity: what the matching answer (positive strength) means",
        ["concept", "matching answer"],
        [(e["concept"], POLARITY.get(e["concept"], "as its files' answer_matching_behavior")) for e in entries],
        'Reverse a concept in the spec with data.flip = ["concept"].',
    )
