"""A new user's first hour (issue 18): the depth rule, no import circle, files and
directories with the umask's mode, and the terminal (markup, progress units, tqdm,
quoting, trailing spaces, --help)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import toy_spec_text

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
    report = PACKAGE / "report"
    assert "remote_steer.report.build" not in _imports(report / "generation.py")
    base = _imports(report / "base.py")
    assert not {m for m in base if m.startswith("remote_steer.report")}


# -- piped output at 80 columns: no markup lost, no tqdm, no trailing spaces ---------------

import os  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from remote_steer.cli import app  # noqa: E402

runner = CliRunner()
PIPED = {"COLUMNS": "80"}  # CliRunner's output is not a terminal: what a pipe to a file gets

SPEC = toy_spec_text("piped", max_items=8, layers=(4, 6), tail="chunk_items = 8")


def _clean(text: str) -> None:
    """No trailing spaces, no tqdm bar, nothing wider than 80 columns."""
    for line in text.splitlines():
        assert line == line.rstrip(), f"trailing spaces: {line!r}"
        # pytest's temporary directories are long; a user's outputs/... path is not
        short = re.sub(r"\S*/pytest-of-[^/]+/pytest-\d+/[^/]+", "<tmp>", line)
        assert len(short) <= 80, f"wider than 80 columns: {line!r}"
    assert "it/s]" not in text and "%|" not in text, "a tqdm bar leaked"


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    """A small toy run in an output directory whose name has a space, run piped."""
    tmp = tmp_path_factory.mktemp("piped")
    spec = tmp / "piped.toml"
    spec.write_text(SPEC.format(out=tmp / "out dir"))
    old = os.umask(0o022)
    try:
        result = runner.invoke(app, ["run", str(spec)], env=PIPED)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    return tmp / "out dir" / "piped", result


def test_run_piped(piped_run):
    run_dir, result = piped_run
    _clean(result.stdout)
    # the hint is shell-quoted: it survives the space in the path
    import shlex

    hint = next(line for line in result.stdout.splitlines() if line.startswith("next: "))
    assert shlex.split(hint) == ["next:", "remote-steer", "report", str(run_dir)]
    # every bar names its unit and has an ETA
    bars = [line for line in result.stdout.splitlines() if "ETA" in line]
    assert bars and all("rows" in line or "pairs" in line for line in bars), result.stdout


def test_report_piped_keeps_bracketed_text(piped_run, tmp_path):
    run_dir, _ = piped_run
    result = runner.invoke(app, ["report", str(run_dir), "-o", str(tmp_path / "r"), "--n-boot", "50"], env=PIPED)
    assert result.exit_code == 0, result.output
    _clean(result.stdout)
    # "[controls]" in a note was eaten as rich markup: "(set  bootstrap = K)"
    assert "(set [controls] bootstrap = K)" in " ".join(result.stdout.split()), result.stdout
    assert "(set  bootstrap" not in result.stdout


def test_export_piped(piped_run, tmp_path):
    run_dir, _ = piped_run
    result = runner.invoke(app, ["export", str(run_dir), "-f", "gguf", "-o", str(tmp_path / "e")], env=PIPED)
    assert result.exit_code == 0, result.output
    _clean(result.stdout)
    for path in (tmp_path / "e").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_generate_piped(piped_run):
    run_dir, _ = piped_run
    args = ["generate", str(run_dir), "Is [bold]this[/bold] kept?", "-m", "toy/qwen3", "-c", "corrigibility"]
    result = runner.invoke(app, [*args, "-l", "4", "-s", "-1", "-s", "1", "--max-new-tokens", "4"], env=PIPED)
    assert result.exit_code == 0, result.output
    _clean(result.stdout)
    assert "baseline (0)" in result.stdout


def test_model_text_is_never_markup():
    """A model's answer with brackets is shown as written (generate and chat)."""
    import io

    from rich.console import Console

    from remote_steer.chat import SteeredAnswers, show_answers
    from remote_steer.display import RichDisplay

    buffer = io.StringIO()
    display = RichDisplay(Console(file=buffer, width=80, force_terminal=False, color_system=None))
    answers = SteeredAnswers("q", "toy/qwen3", "corrigibility", 4, (1.0,), "[bold]A[/bold]", ("[red]B",), True)
    show_answers(display, answers)
    display.note("no bootstrap vectors in these runs (set [controls] bootstrap = K)")
    display.table("t [x]", ["model"], [["m[red]"]], "see [controls]")
    out = " ".join(buffer.getvalue().split())  # captions wrap at 80 columns
    for literal in ("[bold]A[/bold]", "[red]B", "set [controls] bootstrap", "t [x]", "m[red]", "see [controls]"):
        assert literal in out, (literal, out)


def test_run_files_and_directories_get_the_umask_mode(piped_run):
    """Vectors (safetensors writes 0600) and everything else: 0644 files, 0755 dirs."""
    run_dir, _ = piped_run
    paths = [run_dir, *run_dir.rglob("*")]
    assert any(p.suffix == ".safetensors" for p in paths)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


def test_staged_model_directories_are_shared(tmp_path):
    from remote_steer.models.staging import build_atomically

    def fill(staging):
        import torch
        from safetensors.torch import save_file

        (staging / "sub").mkdir()
        save_file({"a": torch.zeros(1)}, str(staging / "sub" / "w.safetensors"))

    old = os.umask(0o022)
    try:
        target = build_atomically(tmp_path / "model", fill)
    finally:
        os.umask(old)
    for path in [target, *target.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


def test_gguf_conversion_draws_no_tqdm():
    from remote_steer.models.real_small import _no_gguf_tqdm

    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    original = gguf_utils.tqdm
    with _no_gguf_tqdm():
        assert gguf_utils.tqdm([1, 2]) == [1, 2]
    assert gguf_utils.tqdm is original
    assert os.environ.get("TQDM_DISABLE") == "1"  # set by the CLI for every other library


def test_help_plain_metavars_and_repeat():
    for command in ("run", "generate", "report", "export", "plan", "bench"):
        result = runner.invoke(app, [command, "--help"], env=PIPED)
        assert result.exit_code == 0
        for leak in ("{", "<str>", "<path>", "<int", "<float", "list[", "<bool>"):
            assert leak not in result.output, (command, leak, result.output)
        _clean(result.output)
    generate = runner.invoke(app, ["generate", "--help"], env=PIPED).output
    assert "-s, --strength FLOAT" in generate and "repeat" in generate
    export = runner.invoke(app, ["export", "--help"], env=PIPED).output
    assert "-l, --layer INT" in export and "repeat" in export
    assert "Usage: root run [OPTIONS] SPEC" in runner.invoke(app, ["run", "--help"], env=PIPED).output


def test_eta_before_any_row_comes_from_a_bar_of_the_same_pace():
    from types import SimpleNamespace

    from remote_steer.display import eta_text

    task = SimpleNamespace(finished=False, time_remaining=None, total=820, completed=0, fields={})
    assert eta_text(task) == "ETA ?"
    task.fields["prior_rate"] = 10.0
    assert eta_text(task) == "ETA ~1:22"
    task.time_remaining = 5.0
    assert eta_text(task) == "ETA 0:05"


def test_controls_say_what_they_can_show():
    """With K controls the smallest p is 1/(K+1); a p of 0.05 needs 19."""
    import pandas as pd

    from remote_steer.analysis.controls import controls_needed, floor_sentence, p_floor
    from remote_steer.analysis.letters import with_controls

    assert p_floor(4) == pytest.approx(0.2) and p_floor(19) == pytest.approx(0.05) and controls_needed(0.05) == 19
    assert "1/5 = 0.2" in floor_sentence(4) and "needs at least 19" in floor_sentence(4)
    assert "needs" not in floor_sentence(19)
    best = pd.DataFrame(
        [
            dict(
                model="m",
                dataset="d",
                layer=3,
                pos_strength=1.0,
                neg_strength=-1.0,
                reading="both letters follow the vector",
            )
        ]
    )
    comparison = pd.DataFrame(
        [
            dict(model="m", dataset="d", layer=3, strength=1.0, within=False, p_value=0.2, n_controls=4),
            dict(model="m", dataset="d", layer=3, strength=-1.0, within=True, p_value=0.6, n_controls=4),
        ]
    )
    out = with_controls(best, comparison)
    assert out["pos_controls"].iloc[0] == "beyond, p 0.2 (min 0.2)" and out["neg_controls"].iloc[0] == "within"


def test_run_says_how_long_it_will_take(tmp_path):
    """A local CPU run prints an estimate at the start and what is left after each step;
    the work is counted per model × concept, by hand for one step."""
    from remote_steer.display import NullDisplay
    from remote_steer.models.loading import load_config
    from remote_steer.run import estimate
    from remote_steer.run.runner import prepare, run_experiment
    from remote_steer.run.spec import parse_spec

    text = SPEC.format(out=tmp_path).replace(
        'concepts = ["corrigibility"]', 'concepts = ["corrigibility", "power-seeking"]'
    )
    plan = prepare(parse_spec(text, "s.toml"))
    work = estimate.plan_work(plan)
    assert [w.step for w in work] == ["toy/qwen3 · corrigibility", "toy/qwen3 · power-seeking"]
    model = plan.models[0]
    config = load_config(model.source)
    per = estimate._per_token_layer(config)
    train, test = model.encoded["corrigibility"]
    n = model.n_layers
    tokens = sum(len(it.prompt_ids) for it in train) + sum(len(it.prompt_ids) for it in test)
    steered = len(test) * 5 * 2 * sum(n - 1 - layer for layer in (4, 6))  # toys: no letter control
    assert work[0].gflop == pytest.approx((tokens * n + 2 * len(train) * n + steered) * per)
    display = NullDisplay()
    run_experiment(parse_spec(text, "s.toml"), display=display)
    assert any(note.startswith("Estimated time: about ") for note in display.notes)
    assert any(note.startswith("toy/qwen3 · corrigibility: done; about ") for note in display.notes)


def test_estimate_counts_the_widest_predicted_window_and_the_ablation():
    """``layer_window = "predicted"``: the steered rows are counted for the window that
    costs most; ``ablation = true``: one more step per model, three full passes over every
    concept's held-out items. By hand for toy/qwen3 (12 layers, window ±1.8 layers)."""
    from remote_steer.models.loading import load_config
    from remote_steer.run import estimate
    from remote_steer.run.runner import prepare
    from remote_steer.run.spec import parse_spec

    text = toy_spec_text("w", head="", concepts=("corrigibility", "power-seeking"), layers=range(2, 11))
    full = estimate.plan_work(prepare(parse_spec(text, "s.toml")))
    extra = 'layer_window = "predicted"\nablation = true'
    plan = prepare(parse_spec(text.replace("layers = [", f"{extra}\nlayers = ["), "s.toml"))
    work = estimate.plan_work(plan)
    assert [w.step for w in work] == [
        "toy/qwen3 · corrigibility",
        "toy/qwen3 · power-seeking",
        "toy/qwen3 · directional ablation",
    ]
    model = plan.models[0]
    per = estimate._per_token_layer(load_config(model.source))
    n, rows = 12, 5 * 2  # window tokens × strengths ±1
    for w, full_w, (train, test) in zip(work, full, model.encoded.values(), strict=False):
        # every sweep layer 2..10: 9 + 8 + ... + 1 = 45 layers above; the costliest window
        # is the one around layer 3 (layers 2, 3, 4: 9 + 8 + 7 = 24)
        assert (full_w.gflop - w.gflop) / per == pytest.approx(len(test) * rows * (45 - 24))
        tokens = sum(len(it.prompt_ids) for it in train) + sum(len(it.prompt_ids) for it in test)
        assert w.gflop == pytest.approx((tokens * n + 2 * len(train) * n + len(test) * rows * 24) * per)
    held_out = sum(len(it.prompt_ids) for _, test in model.encoded.values() for it in test)
    assert work[2].gflop == pytest.approx(3 * held_out * n * per)
    note = estimate.start_note(plan, work)
    assert note is not None and "for 2 model × concept step(s) and the directional ablation" in note
