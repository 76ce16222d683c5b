"""Every engine's remote payload unpickles where ``remote_steer`` cannot be imported.

An NDIF server has no ``remote_steer``: a payload that pickles a project object by
reference (a ``TokenBatch``, an engine, a dataclass) fails there with
``ModuleNotFoundError`` before the trace runs. Servers written here import the project,
so they cannot show it. This test serializes the request of every engine and of the
key probe exactly as ``NdifClient`` would send it (nothing is posted), then loads each
blob in a fresh interpreter whose import system refuses ``remote_steer``, with nnsight's
own ``RequestModel.deserialize`` (the server's entry point; the model's envoys, which
travel as persistent ids, stand in as placeholders).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import make_items

from remote_steer.data.prompts import encode_generation_items, encode_items
from remote_steer.engines.extraction import extract_caa
from remote_steer.engines.generation_fast import FastGenerationEngine
from remote_steer.engines.generation_plain import GenerationEngine
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast
from remote_steer.engines.sweep_plain import LogitDiffEngine, SteerConfig
from remote_steer.remote import ndif
from remote_steer.remote.backend import Backend


class _Captured(Exception):
    """Raised instead of posting: the payload has been taken."""


@pytest.fixture
def capture(monkeypatch):
    blobs: list[bytes] = []
    original = ndif.NdifClient._serialize

    def serialize(self, tracer):
        blobs.append(original(self, tracer))
        raise _Captured

    monkeypatch.setattr(ndif.NdifClient, "_serialize", serialize)
    return blobs


def _backend() -> Backend:
    return Backend("remote", host="http://127.0.0.1:9", api_key="unused")


def _payloads(model, blobs) -> dict[str, bytes]:
    items = encode_items(model.tokenizer, make_items(3, seed=4))
    gen_items = encode_generation_items(model.tokenizer, make_items(2, seed=5))
    torch.manual_seed(0)
    raw = torch.randn(model.n_layers, model.hidden_size)
    last = model.n_layers - 1
    configs = [SteerConfig(min(4, last - 1), 1.0), SteerConfig(min(7, last), -1.0)]
    calls = {
        "extraction (plain)": lambda b: extract_caa(model, items, concept="c", batch_size=2, backend=b),
        "extraction (fast)": lambda b: extract_caa_fast(model, items, concept="c", batch_size=2, backend=b),
        "sweep (plain)": lambda b: LogitDiffEngine(model, b, batch_rows=8).run(items, raw, configs),
        "sweep (fast)": lambda b: FastLogitDiffEngine(model, b, batch_rows=8).run(items, raw, configs),
        "generation (plain)": lambda b: GenerationEngine(model, b, 8, "assistant", 2).run(gen_items, raw, configs),
        "generation (fast)": lambda b: FastGenerationEngine(model, b, 8, "assistant", 2).run(gen_items, raw, configs),
        "key probe": lambda b: ndif.probe_key(b, model),
    }
    out = {}
    for name, call in calls.items():
        with pytest.raises(_Captured):
            call(_backend())
        out[name] = blobs.pop()
    return out


LOADER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "remote_steer" or name.startswith("remote_steer."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    try:
        import remote_steer  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("remote_steer is importable: the check would prove nothing")

    from nnsight.schema.request import RequestModel

    class Placeholders(dict):  # non-empty: nnsight replaces an empty map with {}
        def __contains__(self, key):
            return True

        def __getitem__(self, key):
            return object()

    failed = 0
    for path in sys.argv[1:]:
        try:
            blob = open(path, "rb").read()
            RequestModel.deserialize(blob, Placeholders(model=None), compress=blob[:4] == bytes.fromhex("28b52ffd"))
        except Exception as error:
            failed += 1
            print(f"{path}: {type(error).__name__}: {error}")
    raise SystemExit(1 if failed else 0)
    """
)


def _client(name: str):
    """The model as a remote run holds it: config and tokenizer, no weights."""
    from remote_steer.models.loading import load_model, resolve

    return load_model(resolve(name), dtype="float32", weights=False)


def _load_all(payloads: dict[str, bytes], tmp_path) -> None:
    """Every blob deserialized in one fresh interpreter that refuses ``remote_steer``."""
    paths = []
    for i, blob in enumerate(payloads.values()):
        path = tmp_path / f"{i}.payload"
        path.write_bytes(blob)
        paths.append(str(path))
    result = subprocess.run(
        [sys.executable, "-I", "-c", LOADER, *paths], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    names = dict(zip(paths, payloads, strict=True))
    report = "\n".join(
        line.replace(p, names[p]) for line in result.stdout.splitlines() for p in paths if line.startswith(p)
    )
    assert result.returncode == 0, report or result.stderr[-2000:]


@pytest.mark.parametrize("name", ["toy/qwen3", "toy/qwen3-moe", "small/smollm2-135m-instruct"])
def test_every_payload_loads_without_remote_steer(name, capture, tmp_path):
    if name.startswith("small/"):
        pytest.importorskip("gguf", reason="the embedded real model needs the [real] extra")
    _load_all(_payloads(_client(name), capture), tmp_path)


def test_every_architecture_payload_loads_without_remote_steer(capture, tmp_path):
    """The architecture toys' payloads too (a sliding-window model's prompt pass carries a
    transformers ``DynamicCache``, the kernels a plain-data layout), in one interpreter."""
    from remote_steer.models.registry import ARCH_TOYS

    payloads = {
        f"{card.name}: {label}": blob
        for card in ARCH_TOYS
        for label, blob in _payloads(_client(card.name), capture).items()
    }
    _load_all(payloads, tmp_path)


def test_the_check_catches_a_project_object(capture, tmp_path, monkeypatch):
    """The same loader fails on a payload that does carry a TokenBatch by reference (the old bug)."""
    from remote_steer.engines import batching

    monkeypatch.setattr(batching, "trace_inputs", lambda batch: (batch, batch.position_ids, batch.attention_mask))
    monkeypatch.setattr("remote_steer.engines.sweep_fast.trace_inputs", batching.trace_inputs)
    model = _client("toy/qwen3")
    items = encode_items(model.tokenizer, make_items(2, seed=4))
    vectors = torch.randn(model.n_layers, model.hidden_size)
    with pytest.raises(_Captured):
        FastLogitDiffEngine(model, _backend(), batch_rows=8).run(items, vectors, [SteerConfig(4, 1.0)])
    path = tmp_path / "bad.payload"
    path.write_bytes(capture.pop())
    result = subprocess.run(
        [sys.executable, "-I", "-c", LOADER, str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 1
    assert "remote_steer" in result.stdout
