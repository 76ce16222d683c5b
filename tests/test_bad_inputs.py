"""Every bad input is stopped before compute: one line on stderr, exit 2, and no run
directory made or manifest changed (issue 18). ``BAD`` is the table the issue asks for;
``test_bad_input_table`` prints it (``pytest -s``) as input → message → exit → files left."""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from remote_steer.cli import app

runner = CliRunner()

SPEC = """name = "{name}"
output_dir = "{out}"

[data]
concepts = {concepts}
max_items = 8

[[models]]
name = "toy/qwen3"
dtype = "float32"

[evaluation]
strengths = {strengths}
layers = [4, 6]
chunk_items = 8
"""


def write_spec(tmp_path: Path, name="bad", strengths="[-1.0, 1.0]", concepts='["corrigibility"]', extra="") -> Path:
    path = tmp_path / f"{name}-{hashlib.md5((strengths + concepts + extra).encode()).hexdigest()[:6]}.toml"
    out = tmp_path / "outputs"
    path.write_text(SPEC.format(name=name, out=out, strengths=strengths, concepts=concepts) + extra)
    return path


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes: 'nothing changed' is equality."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def one_line_exit_2(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("remote-steer:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def read_only(monkeypatch):
    """Make directories read-only. As root chmod does not stop writes, so then writes
    under them also fail as the kernel would (EACCES from open/mkdir/rename)."""
    roots: list[Path] = []

    def blocked(path) -> bool:
        try:
            resolved = Path(os.fsdecode(path)).resolve()
        except (TypeError, ValueError):
            return False
        return any(resolved == r or r in resolved.parents for r in roots)

    if os.geteuid() == 0:
        real_open, real_mkdir, real_replace, real_builtin_open = os.open, os.mkdir, os.replace, builtins.open

        def fake_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and blocked(path):
                raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
            return real_open(path, flags, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            if blocked(path) and not Path(os.fsdecode(path)).exists():
                raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
            return real_mkdir(path, *args, **kwargs)

        def fake_replace(src, dst, *args, **kwargs):
            if blocked(dst):
                raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(dst))
            return real_replace(src, dst, *args, **kwargs)

        def fake_builtin_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and blocked(file):
                raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(file))
            return real_builtin_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(os, "replace", fake_replace)
        monkeypatch.setattr(builtins, "open", fake_builtin_open)

    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        for d in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            d.chmod(0o555)
        roots.append(path.resolve())
        return path

    yield make
    for root in roots:
        for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            d.chmod(0o755)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A small finished toy run: two concepts, two layers, ±1."""
    tmp = tmp_path_factory.mktemp("finished")
    spec = write_spec(tmp, name="done", concepts='["corrigibility", "survival-instinct"]')
    result = runner.invoke(app, ["run", str(spec), "--quiet"])
    assert result.exit_code == 0, result.output
    return tmp, spec, tmp / "outputs" / "done"


TABLE: list[tuple[str, str, int, str]] = []


def record(what: str, result, root: Path, before: dict[str, str] | None = None) -> str:
    line = one_line_exit_2(result)
    after = tree(root)
    left = "nothing" if after == (before or {}) else f"{len(set(after.items()) ^ set((before or {}).items()))} changed"
    TABLE.append((what, line, result.exit_code, left))
    return line


@pytest.mark.parametrize(
    "strengths, message",
    [
        ("[0.0]", "only 0"),
        ("[-1.0, -4.0]", "no positive strength"),
        ("[1.0, 1.0]", "listed twice"),
        ("[nan, 1.0]", "not a finite number"),
        ("[inf, 1.0]", "not a finite number"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_bad_strengths_stop_plan_and_run(tmp_path, strengths, message, command):
    spec = write_spec(tmp_path, strengths=strengths)
    result = runner.invoke(app, [command, str(spec)])
    line = record(f"{command}: strengths = {strengths}", result, tmp_path / "outputs")
    assert "evaluation.strengths" in line and message in line and f"{spec}:" in line
    assert "Writing run" not in result.output and not (tmp_path / "outputs").exists()


def test_zero_beside_others_is_fine(tmp_path):
    from remote_steer.run.spec import load_spec, validate

    validate(load_spec(write_spec(tmp_path, strengths="[-1.0, 0.0, 1.0]")))


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--backend", "bogus", "--backend 'bogus': expected one of local, simulated-remote, remote"),
        ("--engine", "turbo", "--engine 'turbo'"),
        ("--modes", "logit,gen", "--modes: unknown mode 'gen'"),
    ],
)
def test_bad_option_stops_before_the_run_directory(tmp_path, option, value, message):
    spec = write_spec(tmp_path)
    result = runner.invoke(app, ["run", str(spec), option, value])
    line = record(f"run {option} {value}", result, tmp_path / "outputs")
    assert message in line
    assert "Writing run" not in result.output and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("backend", '"bogus"', "models[0].backend: 'bogus' is not one of"),
        ("engine", '"turbo"', "models[0].engine: 'turbo' is not one of"),
    ],
)
def test_bad_model_fields_stop_plan(tmp_path, field, value, message):
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace('dtype = "float32"', f'dtype = "float32"\n{field} = {value}'))
    result = runner.invoke(app, ["plan", str(spec)])
    assert message in record(f"plan: models.{field} = {value}", result, tmp_path / "outputs")


def test_validator_catches_what_the_toml_reader_cannot(tmp_path):
    """Specs built in Python (the API) skip the TOML reader: the validator still stops them."""
    import dataclasses

    from remote_steer.errors import SpecError
    from remote_steer.run.runner import run_experiment
    from remote_steer.run.spec import load_spec

    spec = load_spec(write_spec(tmp_path))
    bad = dataclasses.replace(spec, models=(dataclasses.replace(spec.models[0], backend="bogus"),))
    with pytest.raises(SpecError, match=r"models\[0\]\.backend: 'bogus'"):
        run_experiment(bad)
    bad = dataclasses.replace(spec, evaluation=dataclasses.replace(spec.evaluation, modes=("logits",)))
    with pytest.raises(SpecError, match="unknown mode 'logits'"):
        run_experiment(bad)
    assert not (tmp_path / "outputs").exists()


def test_read_only_output_dir(tmp_path, read_only):
    locked = read_only(tmp_path / "locked")
    spec = write_spec(tmp_path)
    result = runner.invoke(app, ["run", str(spec), "--output-dir", str(locked), "--quiet"])
    line = record("run --output-dir <read-only>", result, locked)
    assert str(locked) in line and "Permission denied" in line
    assert list(locked.iterdir()) == []


def test_output_dir_under_a_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    spec = write_spec(tmp_path)
    result = runner.invoke(app, ["run", str(spec), "--output-dir", str(blocker / "sub"), "--quiet"])
    line = record("run --output-dir <under a file>", result, tmp_path / "outputs")
    assert "Not a directory" in line or "File exists" in line
    assert blocker.read_text() == "not a directory"


def test_disk_full_mid_run_leaves_whole_files(tmp_path, monkeypatch):
    """ENOSPC on the first result part: one line, and only whole files (no *.tmp)."""
    import remote_steer.rundir.layout as store

    real = store.write_parquet

    def full(path, frame):
        if "parts" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, frame)

    monkeypatch.setattr(store, "write_parquet", full)
    spec = write_spec(tmp_path)
    result = runner.invoke(app, ["run", str(spec), "--quiet"])
    line = one_line_exit_2(result)
    TABLE.append(("run, disk full at the first part", line, 2, "whole files only (manifest: interrupted)"))
    assert "No space left on device" in line
    leftovers = [p for p in (tmp_path / "outputs").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    manifest = json.loads((tmp_path / "outputs" / "bad" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"


def test_narrower_spec_is_refused_naming_what_it_drops(finished_run):
    tmp, _, run_dir = finished_run
    before = tree(run_dir)
    narrow = write_spec(tmp, name="done", concepts='["corrigibility"]')
    result = runner.invoke(app, ["run", str(narrow), "--quiet"])
    line = record("run: a narrower spec (one concept of two) on a finished run", result, run_dir, before)
    assert "data.concepts (drops survival-instinct)" in line
    fewer = write_spec(tmp, name="done", concepts='["corrigibility", "survival-instinct"]', strengths="[1.0]")
    line = record("run: a spec that drops a strength", runner.invoke(app, ["run", str(fewer)]), run_dir, before)
    assert "evaluation.strengths (drops -1)" in line
    modes = runner.invoke(app, ["run", str(finished_run[1]), "--modes", "generation"])
    assert "evaluation.modes (drops logit)" in record("run --modes generation on a logit run", modes, run_dir, before)
    assert tree(run_dir) == before


def test_wider_spec_still_extends(finished_run, tmp_path):
    _, spec, run_dir = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    wider = tmp_path / "wider.toml"
    wider.write_text(spec.read_text().replace("strengths = [-1.0, 1.0]", "strengths = [-1.0, 1.0, 2.0]"))
    result = runner.invoke(app, ["run", str(wider), "--output-dir", str(tmp_path), "--name", "run", "--quiet"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["report", "export"])
def test_read_only_run_dir(finished_run, tmp_path, read_only, command):
    _, _, run_dir = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "report", ignore_errors=True)
    shutil.rmtree(copy / "export", ignore_errors=True)
    read_only(copy)
    before = tree(copy)
    args = ["report", str(copy), "--no-figures"] if command == "report" else ["export", str(copy), "-f", "safetensors"]
    line = record(f"{command} on a read-only run directory", runner.invoke(app, args), copy, before)
    assert str(copy) in line and "Permission denied" in line


def test_bad_input_table(capsys, request):
    """Prints the table gathered above with ``pytest -s``; passes when the others ran."""
    if request.config.getoption("capture") != "no":
        return
    with capsys.disabled():
        print("\n| input | message | exit | files left |\n|---|---|---|---|")
        for what, line, code, left in TABLE:
            print(f"| {what} | `{line}` | {code} | {left} |")
