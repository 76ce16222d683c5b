"""The README's "Your own model and data" section, run as written (issue 27).

Each code block of the section is used as it stands: a block introduced by "Save as
`FILE`:" is written to FILE; every ``bash`` block is run line by line in a fresh folder,
with ``remote-steer`` and ``python`` meaning this checkout's. Then the outcome is checked:
the custom concept is listed from the spec, the run used the local checkpoint under its
short name (results, vectors folder), and ``generate --model my-model`` answered.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]


def _section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("## Your own model and data\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _blocks(section: str) -> list[tuple[str, str, str | None]]:
    """(language, body, file to save it as) for each fenced block, in order."""
    out = []
    for match in re.finditer(r"(?:Save as `([^`]+)`:\n\n)?```(\w+)\n(.*?)```", section, re.S):
        out.append((match.group(2), match.group(3), match.group(1)))
    return out


def test_readme_your_own_model_and_data_runs_as_written(tmp_path):
    blocks = _blocks(_section())
    assert [lang for lang, _, _ in blocks] == ["jsonl", "bash", "toml", "bash"]
    assert len(blocks[0][1].strip().splitlines()) == 3  # the three-line example file
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, argv in (("remote-steer", "-m remote_steer.cli"), ("python", "")):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {argv} "$@"\n')
        script.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO_ROOT),
        "COLUMNS": "100",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    outputs = []
    for lang, body, save_as in blocks:
        if save_as:
            (work / save_as).write_text(body)
            continue
        assert lang == "bash"
        for command in body.strip().splitlines():
            done = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            outputs.append((command, done.stdout))

    listed = next(out for command, out in outputs if command.startswith("remote-steer datasets"))
    assert "my-concept (spec)" in listed
    planned = next(out for command, out in outputs if command.startswith("remote-steer plan"))
    assert "./checkpoints/my-model" in planned
    run = work / "outputs" / "my-study"
    assert (run / "vectors" / "my-model" / "my-concept.safetensors").is_file()
    results = pd.read_parquet(run / "results" / "logit_diff.parquet")
    assert set(results["model"]) == {"my-model"} and set(results["dataset"]) == {"my-concept"}
    assert set(results["layer"]) == {4, 6, 8}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["spec"]["models"][0]["name"] == "./checkpoints/my-model"
    answered = next(out for command, out in outputs if command.startswith("remote-steer generate"))
    assert "my-model · my-concept · layer 6" in answered and "+4" in answered
    assert (work / "exported" / "my-model__my-concept.safetensors").is_file()


def test_local_checkpoints_get_short_labels_and_a_clash_is_one_line():
    import pytest

    from remote_steer.errors import SpecError
    from remote_steer.run.spec import parse_spec, short_label, validate

    assert short_label("./checkpoints/my-model") == "my-model" and short_label("/a/b/ckpt-7/") == "ckpt-7"
    assert short_label("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B" and short_label("toy/qwen3") == "toy/qwen3"
    head = 'name = "s"\n[data]\nconcepts = ["corrigibility"]\n'
    spec = parse_spec(head + '[[models]]\nname = "/x/run-1/final"\nlabel = "run-1"\n[[models]]\nname = "~/y/final"\n')
    assert [m.label for m in spec.models] == ["run-1", "final"]
    with pytest.raises(SpecError, match=r"two entries are named 'final'.*set label") as clash:
        validate(parse_spec(head + '[[models]]\nname = "/x/a/final"\n[[models]]\nname = "./b/final"\n', "clash.toml"))
    assert "\n" not in str(clash.value)
    with pytest.raises(SpecError, match="label or display_name, not both"):
        parse_spec(head + '[[models]]\nname = "./final"\nlabel = "a"\ndisplay_name = "b"\n')
