"""Served, not served and cold, against NDIF's own server (issue 27; the ``ndif_stack``
fixture, see tests/test_ndif_real.py).

One model deployed (toy/qwen3, RUNNING), one on the server's disk but not deployed (a copy
of the toy laid into its Hugging Face cache under another repo id: /status lists it COLD)
and one it has never heard of. ``plan --check-hosts``, ``run`` and ``check-remote`` each
say one line where a line is expected, and nothing is computed or written.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from ndif_stack import stack as real_stack
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.remote.status import COLD_NOTE, parse_status

COLD = "cold-org/toy-qwen3-cold"
MISSING = "cold-org/toy-qwen3-missing"


def _cold_model_on_disk(ndif_stack) -> None:
    """Lay the toy into the server's cache as COLD and wait for /status (cached for up to a
    minute by the server) to list it."""
    from remote_steer.models.loading import resolve

    hub = Path(ndif_stack.root) / "hf" / "hub"
    if not (hub / f"models--{COLD.replace('/', '--')}").exists():
        real_stack.lay_out_hf_cache(hub, COLD, Path(resolve("toy/qwen3").location))
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        models = parse_status(httpx.get(f"{ndif_stack.host}/status", timeout=30).json())
        if COLD in models:
            assert models[COLD].cold and models["toy/qwen3"].hosted
            return
        time.sleep(3)
    raise AssertionError(f"{COLD} never appeared in /status")


def _spec(tmp_path, host: str) -> Path:
    blocks = "".join(
        f'[[models]]\nname = "{name}"\nbackend = "remote"\nhost = "{host}"\ndtype = "float32"\n'
        for name in ("toy/qwen3", COLD, MISSING)
    )
    path = tmp_path / "served.toml"
    path.write_text(
        f'name = "served"\noutput_dir = "{tmp_path}"\n[data]\nconcepts = ["corrigibility"]\nmax_items = 8\n'
        f"{blocks}[evaluation]\nlayers = [4]\nstrengths = [-1.0, 1.0]\n"
    )
    return path


def test_served_cold_and_not_served_say_one_line_each_and_nothing_runs(ndif_stack, tmp_path):
    _cold_model_on_disk(ndif_stack)
    env = {**ndif_stack.client_env(), "COLUMNS": "250", "HF_HUB_OFFLINE": "1"}
    spec = _spec(tmp_path, ndif_stack.host)

    planned = CliRunner().invoke(app, ["plan", "--check-hosts", str(spec)], env=env)
    assert planned.exit_code == 0, planned.output
    rows = [[cell.strip() for cell in line.split("│")] for line in planned.output.splitlines() if "│" in line]
    column = next(row.index("hosted") for row in rows if "hosted" in row)
    hosted = {row[1]: row[column] for row in rows if len(row) > column and row[column] in ("yes", "cold", "no")}
    assert hosted == {"toy/qwen3": "yes", COLD: "cold", MISSING: "no"}, planned.output
    cold = [line for line in planned.output.splitlines() if COLD_NOTE in line]
    missing = [line for line in planned.output.splitlines() if "is not served" in line]
    assert len(cold) == 1 and cold[0].startswith(f"{COLD} on {ndif_stack.host}")
    assert len(missing) == 1 and f"closest served: {COLD} (COLD)" in missing[0]

    ran = CliRunner().invoke(app, ["run", str(spec)], env=env)
    assert ran.exit_code == 2
    refused = [line for line in ran.output.splitlines() if "is not served" in line]
    advice = 'run it with backend = "local" or choose a served model'
    assert len(refused) == 1 and refused[0] == f"error: {missing[0]}; {advice}"
    assert sum(COLD_NOTE in line for line in ran.output.splitlines()) == 1
    assert "Checking the API key" not in ran.output  # refused before the first job
    assert not (tmp_path / "served").exists()

    checked = CliRunner().invoke(app, ["check-remote", "--host", ndif_stack.host, "--model", COLD], env=env)
    assert checked.exit_code == 2
    failed = [line for line in checked.output.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and COLD_NOTE in failed[0] and "nothing sent" in failed[0]
    assert ndif_stack.api_key not in planned.output + ran.output + checked.output
