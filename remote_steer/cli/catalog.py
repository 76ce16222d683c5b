"""``remote-steer models`` and ``remote-steer datasets``: what the registry and a source hold."""

from __future__ import annotations

from pathlib import Path

import typer

from remote_steer.cli.app import command


@command(short_help="List the study's models and the random-weight toys.")
def models() -> None:
    """List the registry's models grouped by family and base model: the Qwen3 study, the
    Qwen2.5-32B matched pair, NDIF's dedicated models (Llama 3, OLMo 3), the embedded real
    models and the random-weight toys. Narrower than 150 columns: one short table per
    family (hub ids, widths, heads and tied embeddings need a wider terminal)."""
    from remote_steer.display import RichDisplay
    from remote_steer.models.registry import base_model, grouped_cards

    display = RichDisplay()
    cards = grouped_cards()

    def params(c, active: bool = False) -> str:
        value = c.params_active_b if active else c.params_total_b
        return f"{value:g}B" if not c.toy else f"{value * 1000:.0f}M"

    caption = (
        "Grouped by family, then by the base model each was post-trained from: models on one base "
        "(the Qwen2.5-32B matched pair) differ only in post-training. "
        "toy/* models have random weights from a fixed seed: for tests and the quickstart only. "
        "small/* are real trained models built offline from GGUF packages (SmolLM2-135M-Instruct, Llama "
        "architecture; Gemma 3 270M, pre-trained): not Qwen3, not a study model. Llama 3 and OLMo 3 are "
        "the models NDIF serves to every key (8B-Instruct and OLMo 3 to pilot keys only); Meta's repos "
        "are gated on the hub."
    )
    if display.console.width < 150:
        for family in dict.fromkeys(c.family for c in cards):
            members = [c for c in cards if c.family == family]
            bases = {base_model(c) for c in members}
            base = bases.pop() if len(bases) == 1 else "—"
            title = family + (f" (all on {base})" if base != "—" and len(members) > 1 else "")
            short: list[tuple[object, ...]] = [
                (
                    c.name,
                    c.n_layers,
                    params(c) + (f" ({params(c, True)} act.)" if c.moe else ""),
                    c.training,
                    c.default_backend,
                )
                for c in members
            ]
            display.table(title, ["model", "layers", "params", "training", "backend"], short)
        display.note(caption + " Hub ids, widths, heads and tied embeddings: at 150 columns or more.")
        return
    rows = [
        (
            c.family,
            base_model(c),
            c.name,
            "embedded (random-weight toy)" if c.toy else (f"embedded ({c.hub_id} GGUF)" if c.embedded else c.hub_id),
            c.n_layers,
            c.hidden_size,
            f"{c.n_heads}/{c.n_kv_heads}",
            params(c),
            params(c, True),
            c.kind,
            c.training,
            "yes" if c.tied_embeddings else "no",
            c.default_backend,
        )
        for c in cards
    ]
    display.table(
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
        caption,
    )


@command(short_help="List the concepts and whether a source has them.")
def datasets(
    source: str | None = typer.Option(
        None, "--source", help='"fixtures" (default), "hub", or a local model-written-evals root.'
    ),
    spec: Path | None = typer.Option(
        None, "--spec", help="Also list the spec's own concepts ([data.files]), from its [data] source."
    ),
) -> None:
    """List the study's concepts, the files behind them and whether SOURCE has them;
    with --spec, the spec's own concepts too (any name given in [data.files])."""
    from remote_steer.data.concepts import POLARITY
    from remote_steer.data.loading import list_concepts
    from remote_steer.display import RichDisplay

    files: dict[str, tuple[str, ...]] = {}
    if spec is not None:
        from remote_steer.run.spec import load_spec

        data = load_spec(spec).data
        source, files = source or data.source, data.files
    source = source or "fixtures"
    entries = list_concepts(source, files)
    hub = source == "hub"
    missing = "no (not cached)" if hub else "no (missing)"
    rows = [
        (
            e["concept"] + (" (spec)" if e["concept"] in files else ""),
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
