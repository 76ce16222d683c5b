"""A new user's first hour (issue 18): the depth rule, no import circle, files and
directories with the umask's mode, and the terminal (markup, progress units, tqdm,
quoting, trailing spaces, --help)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from remote_steer.models.registry import layer_depth
from remote_steer.run.spec import first_sweep_layer

PACKAGE = Path(__file__).resolve().parents[1] / "remote_steer"


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.33, 1 / 3, 0.5, 0.9])
def test_first_sweep_layer_is_the_shallowest_at_the_depth(fraction):
    """The sweep starts at the shallowest layer whose depth column (l+1)/L reaches the
    fraction: the rule that picks it and the column agree for every depth."""
    for n_layers in range(1, 97):
        first = first_sweep_layer(fraction, n_layers)
        assert layer_depth(first, n_layers) >= fraction - 1e-9
        assert first == 0 or layer_depth(first - 1, n_layers) < fraction
    assert first_sweep_layer(0.33, 12) == 3 and layer_depth(3, 12) == pytest.approx(1 / 3)
    assert first_sweep_layer(0.33, 36) == 11 and first_sweep_layer(0.33, 30) == 9


def _imports(module: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_import_circle_between_the_reports():
    """report imports generation_report (lazily); generation_report never imports report,
    at module level or inside a function: what both need lives in report_base."""
    analysis = PACKAGE / "analysis"
    assert "remote_steer.analysis.report" not in _imports(analysis / "generation_report.py")
    base = _imports(analysis / "report_base.py")
    assert not {m for m in base if m.startswith("remote_steer.analysis")}
