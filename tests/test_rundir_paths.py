"""The run directory is spelt in one place (remote_steer/rundir/), and the file helpers
are not imported upward from run/ (issue 24).

A module outside ``rundir`` that joins a run-directory name to a path
(``root / "results"``, ``path / "manifest.json"``, ``dir / f"{table}.parquet"``,
``.joinpath("parts")``) or globs a part name (``"items-*.parquet"``) fails here: it
should ask ``RunDir`` for the path instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "remote_steer"
RESERVED = {
    "manifest.json",
    "parts",
    "results",
    "vectors",
    "jobs",
    "summary.csv",
    "letter_effects.csv",
    "report",
    "export",
    ".lock",
}
GROUND = ("data", "models", "engines", "remote", "analysis", "rundir")


def _text(node: ast.AST) -> str | None:
    """A string constant's value, or an f-string's literal parts joined with ``{}``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def _spelt(text: str) -> bool:
    first = text.split("/")[0]
    return first in RESERVED or text.endswith(".parquet") or text.startswith("items-")


def _offences(path: Path, base: Path = PACKAGE.parent) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        operands: list[ast.AST] = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            operands = [node.left, node.right]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("joinpath", "glob", "rglob", "with_name", "with_suffix"):
                operands = list(node.args)
        for operand in operands:
            text = _text(operand)
            if text is not None and _spelt(text):
                out.append(f"{path.relative_to(base)}:{node.lineno}: {text!r}")
    return out


def test_no_module_outside_rundir_spells_a_run_directory_path():
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "rundir" in path.relative_to(PACKAGE).parts:
            continue
        offences += _offences(path)
    assert not offences, "ask remote_steer.rundir.RunDir for these paths:\n" + "\n".join(offences)


def test_the_check_catches_what_it_should(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        'root / "results" / "summary.csv"\nrun / f"{t}.parquet"\nd.glob("items-*.parquet")\nx / "model.safetensors"\n'
    )
    found = sorted(f.split(": ", 1)[1] for f in _offences(sample, tmp_path))
    assert found == ["'items-*.parquet'", "'results'", "'summary.csv'", "'{}.parquet'"]


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_lower_floors_do_not_import_run():
    offences = []
    for floor in GROUND:
        for path in sorted((PACKAGE / floor).rglob("*.py")):
            for name in _imported(path):
                if name == "remote_steer.run" or name.startswith("remote_steer.run."):
                    offences.append(f"{path.relative_to(PACKAGE.parent)}: imports {name}")
    assert not offences, "\n".join(offences)


def test_rundir_stands_on_the_ground_floor():
    """rundir imports nothing of remote_steer but errors and itself."""
    for path in sorted((PACKAGE / "rundir").glob("*.py")):
        for name in _imported(path):
            if name.startswith("remote_steer"):
                assert name == "remote_steer.errors" or name.startswith("remote_steer.rundir"), f"{path}: {name}"
