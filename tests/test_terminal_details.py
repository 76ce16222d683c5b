"""Small terminal promises: the Ctrl-C message, files 0644, reasons for "unavailable",
changed-spec refusals naming the field, concept and layer errors with line numbers,
help without type metavars, whole-sentence command summaries."""

from __future__ import annotations

import stat

import pytest
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.errors import RemoteSteerError, SpecError

runner = CliRunner()

SPEC = """name = "t"
output_dir = "{out}"

[data]
concepts = ["corrigibility", "corigibility"]
max_items = 6

[[models]]
name = "toy/qwen3"

[evaluation]
strengths = [-1.0, 1.0]
layers = [4, 40]
"""


def test_ctrl_c_names_the_resume_command_without_fresh(tmp_path, monkeypatch):
    import remote_steer.run.runner as runner_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "run_experiment", interrupted)
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.replace("{out}", str(tmp_path)).replace(', "corigibility"', ""))
    result = runner.invoke(app, ["run", str(spec), "--fresh", "--name", "x", "--quiet"])
    assert result.exit_code == 130
    assert "finished chunks are saved" in result.stderr and "without --fresh" in result.stderr
    command = result.stderr.strip().splitlines()[-1].strip()
    assert command == f"remote-steer run {spec} --name x" and "--fresh" not in command


def test_store_files_are_0644(tmp_path):
    import pandas as pd

    from remote_steer.rundir import write_json, write_parquet

    write_json(tmp_path / "m.json", {"a": 1})
    write_parquet(tmp_path / "r.parquet", pd.DataFrame({"a": [1]}))
    for name in ("m.json", "r.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_changed_spec_refusal_names_the_field(tmp_path):
    from remote_steer.run.extend import reconcile
    from remote_steer.rundir import RunDir

    store = RunDir(tmp_path / "run")
    spec = {"evaluation": {"positions": "assistant", "batch_size": 64}, "name": "a"}
    store.open_run(spec, 0, {})
    changed = {"evaluation": {"positions": "all", "batch_size": 64}, "name": "a"}
    with pytest.raises(SpecError, match=r"evaluation\.positions changed since this run was written"):
        reconcile(store, changed)


def test_unknown_concept_and_layer_errors_carry_the_line(tmp_path):
    from remote_steer.run.runner import prepare
    from remote_steer.run.spec import load_spec

    path = tmp_path / "s.toml"
    path.write_text(SPEC.replace("{out}", str(tmp_path)))
    with pytest.raises(RemoteSteerError, match=rf"^{path}:5: data.concepts: unknown concept 'corigibility'"):
        prepare(load_spec(path))
    spec = load_spec(path)
    with pytest.raises(SpecError, match=rf"^{path}:13: evaluation.layers: layer 40 is outside toy/qwen3"):
        spec.check_layers("toy/qwen3", 12)


def test_hub_datasets_say_why_they_are_unavailable(monkeypatch):
    import remote_steer.data.loading as loading

    real = loading.list_concepts

    def offline(source, overrides=None):
        rows = real("fixtures", overrides)
        return [dict(r, available=False, n_lines=None) for r in rows]

    monkeypatch.setattr(loading, "list_concepts", offline)
    result = runner.invoke(app, ["datasets", "--source", "hub"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "no (not cached)" in text and "never goes online" in text and "None" not in text


def test_help_has_no_type_metavars_and_whole_summaries():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    commands = result.output.split("Commands:")[1].strip().splitlines()
    assert len(commands) >= 8
    for line in commands:
        assert line.rstrip().endswith(".") and not line.rstrip().endswith("..."), line
    for command in ("run", "generate", "export"):
        sub = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"})
        assert sub.exit_code == 0 and "<bool>" not in sub.output
