"""The small toy/qwen3 spec the tests run, as TOML text (standard library only: the fault
harness imports it in the process it forks its runs from)."""

from __future__ import annotations

from collections.abc import Sequence


def _toml_list(values: Sequence[object] | str) -> str:
    """A TOML array of numbers (a string passes through as written, e.g. "[-1e6, 1e6]")."""
    return values if isinstance(values, str) else "[" + ", ".join(str(v) for v in values) + "]"


def toy_spec_text(
    name: str = "t",
    *,
    head: str = 'output_dir = "{out}"',
    concepts: Sequence[str] = ("corrigibility",),
    max_items: int = 6,
    model: str = "",
    strengths: Sequence[float] | str = (-1.0, 1.0),
    layers: Sequence[int] | str = (4, 11),
    tail: str = "",
) -> str:
    """The small toy/qwen3 spec the tests run, as TOML text.

    ``head``: top-level lines after ``name`` (``{out}`` stays a placeholder to fill in); ``model``: lines
    added to the ``[[models]]`` table; ``tail``: lines after ``[evaluation]``'s layers (more fields, tables).
    """
    quoted = ", ".join(f'"{c}"' for c in concepts)
    lines = [
        f'name = "{name}"',
        head,
        "[data]",
        f"concepts = [{quoted}]",
        f"max_items = {max_items}",
        "[[models]]",
        'name = "toy/qwen3"',
        'dtype = "float32"',
        model,
        "[evaluation]",
        f"strengths = {_toml_list(strengths)}",
        f"layers = {_toml_list(layers)}",
        tail,
    ]
    return "\n" + "\n".join(line for line in lines if line) + "\n"
