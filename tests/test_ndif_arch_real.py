"""Every architecture toy on NDIF's own server (ndif 0.1.2, the ``ndif_stack`` fixture).

The toys of ``registry.ARCH_TOYS`` (qwen2, llama, mistral, mixtral, gemma2, gemma3_text,
phi3, olmo2; the Qwen3 and Qwen3-MoE toys are the stack's defaults, covered by
test_ndif_real.py and test_ndif_client_real.py) are deployed on the session's stack with
the CPU actor in float32, beside its default models. For each: the default (fast)
engines' extraction, logit sweep and greedy generation on the server, against the same
engines run locally: numbers equal within a tolerance scaled to their magnitude, the
generated tokens identical. The server cannot import ``remote_steer``: a sliding-window
model's full-length ``DynamicCache`` and the kernels' layout travel as transformers'
objects and plain data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_items
from ndif_stack import stack as real_stack

from remote_steer.data.prompts import encode_generation_items, encode_items
from remote_steer.engines.generation_fast import FastGenerationEngine
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast, supports_fast_path
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.models.loading import load_model, resolve
from remote_steer.models.registry import ARCH_TOYS
from remote_steer.remote.backend import Backend

NAMES = [card.name for card in ARCH_TOYS]
REL = 1e-5  # float32, another thread count on the server: tolerance per unit of magnitude


@pytest.fixture(scope="module")
def arch_stack(ndif_stack):
    """The session's stack with every architecture toy deployed beside its default models
    (one ``ndif deploy``), evicted again after this module: their actors (about 0.5 GiB
    each) would otherwise idle through the session, and be killed and restarted by
    test_ndif_client_real.py's actor-kill test."""
    stack = real_stack.Stack.load(Path(ndif_stack.root))
    env = real_stack.server_env(stack)
    added = [name for name in NAMES if name not in stack.models]
    if added:
        real_stack.deploy(stack, real_stack.prepare_models(added), env)
    yield ndif_stack
    real_stack.evict(real_stack.Stack.load(Path(ndif_stack.root)), added, env)


def _close(got, want) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, atol=REL * scale, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_architecture_on_the_real_stack_equals_local(arch_stack, name, tmp_path):
    local_model = load_model(resolve(name), dtype="float32")
    client = load_model(resolve(name), dtype="float32", weights=False)
    assert supports_fast_path(client), client.fast_path_refusal  # the default engine is the fast one
    local = Backend()
    remote = Backend("remote", host=arch_stack.host, api_key=arch_stack.api_key, journal_dir=tmp_path / "jobs")
    items = encode_items(local_model.tokenizer, make_items(3, seed=31))
    assert min(len(it.prompt_ids) for it in items) > 8  # longer than the toys' sliding window

    want = extract_caa_fast(local_model, items, concept="c", batch_size=3, backend=local)
    got = extract_caa_fast(client, items, concept="c", batch_size=3, backend=remote, request_key="extraction")
    _close(got.vectors, want.vectors)
    _close(got.residual_norms, want.residual_norms)

    # steering vectors at half each layer's residual norm: every number moves
    assert want.residual_norms is not None
    unit = want.vectors / want.vectors.norm(dim=-1, keepdim=True)
    vectors = unit * want.residual_norms[:, None] * 0.5
    last = local_model.n_layers - 1
    configs = [SteerConfig(0, 1.0), SteerConfig(1, -2.0), SteerConfig(last, 1.5)]
    want_sweep = FastLogitDiffEngine(local_model, local, batch_rows=64).run(items, vectors, configs)
    got_sweep = FastLogitDiffEngine(client, remote, batch_rows=64).run(items, vectors, configs, request_key="sweep")
    _close(got_sweep.baseline, want_sweep.baseline)
    _close(got_sweep.steered, want_sweep.steered)
    assert np.abs(want_sweep.steered - want_sweep.baseline[:, None]).max() > 1e-3

    gen_items = encode_generation_items(local_model.tokenizer, make_items(2, seed=32))
    gen_vectors = (vectors * 4).to(torch.float32)
    engine = dict(batch_rows=64, positions="assistant", max_new_tokens=4, thinking=False, force_length=True)
    want_gen = FastGenerationEngine(local_model, local, **engine).run(gen_items, gen_vectors, configs)
    got_gen = FastGenerationEngine(client, remote, **engine).run(
        gen_items, gen_vectors, configs, request_key="generation"
    )
    assert got_gen.baseline_ids == want_gen.baseline_ids
    assert got_gen.steered_ids == want_gen.steered_ids
    steered = {ids for row in want_gen.steered_ids for ids in row}
    assert len(steered | set(want_gen.baseline_ids)) > 1, "steering must change the generations"
    # every number above came from the server: one completed job per engine call, none resubmitted
    attempts = [a for p in sorted((tmp_path / "jobs").glob("*.json")) for a in json.loads(p.read_text())["attempts"]]
    assert len(attempts) == 3 and all(a["state"] == "completed" for a in attempts), attempts
