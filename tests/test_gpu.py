"""GPU checks (opt in: ``pytest -m gpu``); every test skips cleanly without CUDA.

- float32 on CUDA: the fast engine equals the plain engine to 1e-4, as on the CPU.
- bfloat16 on CUDA: fast = plain within ``BF16_ATOL + BF16_RTOL·|plain|``. bf16 keeps
  8 significant bits (relative step 2⁻⁸ ≈ 3.9e-3); the fast engine computes the same
  layers in a different order of operations (the steered window against cached
  prefix keys/values instead of the whole sequence), so each of the model's 30
  layers may round differently. Logit diffs of the trained SmolLM2 are O(1), and
  steering effects at strength 8 are O(0.1–1); 0.05 absolute + 2 % relative is ten
  bf16 steps at that scale and still an order of magnitude below the effects.
- ``device_map`` spreading layers over devices (half the layers on cuda:0, the rest
  on cuda:1 if present, else on the CPU): the fast kernel moves hidden states,
  masks and rotary embeddings to each layer's device; fast = plain there too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

NAME = "small/smollm2-135m-instruct"
BF16_ATOL, BF16_RTOL = 0.05, 0.02


def _items(tokenizer, n=6):
    from conftest import make_items

    from remote_steer.data.prompts import encode_items

    return encode_items(tokenizer, make_items(n, seed=7))


def _configs(n_layers):
    from remote_steer.engines.sweep_plain import SteerConfig

    return [SteerConfig(layer, s) for layer in (n_layers // 3, n_layers // 2, n_layers - 1) for s in (-8.0, 8.0)]


def _run_both(model, items):
    from remote_steer.engines.extraction import extract_caa
    from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast
    from remote_steer.engines.sweep_plain import LogitDiffEngine
    from remote_steer.remote.backend import Backend

    fast_v = extract_caa_fast(model, items, concept="c", batch_size=4, backend=Backend()).vectors
    plain_v = extract_caa(model, items, concept="c", batch_size=4, backend=Backend()).vectors
    configs = _configs(model.n_layers)
    fast = FastLogitDiffEngine(model, Backend(), batch_rows=16).run(items, plain_v, configs)
    plain = LogitDiffEngine(model, Backend(), batch_rows=16).run(items, plain_v, configs)
    return fast_v, plain_v, fast, plain


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_equals_plain_on_cuda(dtype):
    from remote_steer.models.loading import load_model, resolve

    model = load_model(resolve(NAME), dtype=dtype, device="cuda")
    items = _items(model.tokenizer)
    fast_v, plain_v, fast, plain = _run_both(model, items)
    if dtype == "float32":
        torch.testing.assert_close(fast_v.float(), plain_v.float(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(fast.steered, plain.steered, atol=1e-4)
        np.testing.assert_allclose(fast.baseline, plain.baseline, atol=1e-4)
    else:
        torch.testing.assert_close(fast_v.float(), plain_v.float(), atol=BF16_ATOL, rtol=BF16_RTOL)
        tol = BF16_ATOL + BF16_RTOL * np.abs(plain.steered)
        assert (np.abs(fast.steered - plain.steered) <= tol).all(), np.abs(fast.steered - plain.steered).max()
        effect = np.abs(plain.steered - plain.baseline[:, None]).max()
        assert effect > 10 * BF16_ATOL  # the tolerance is well below what steering does


def test_layers_spread_over_devices():
    import nnsight

    from remote_steer.models.loading import LoadedModel, load_tokenizer, resolve

    source = resolve(NAME)
    tokenizer = load_tokenizer(source)
    second = "cuda:1" if torch.cuda.device_count() > 1 else "cpu"
    n = 30
    device_map = {
        "model.embed_tokens": "cuda:0",
        "model.rotary_emb": "cuda:0",
        "model.norm": second,
        "lm_head": "cuda:0",
    }
    device_map.update({f"model.layers.{i}": ("cuda:0" if i < n // 2 else second) for i in range(n)})
    nn_model = nnsight.LanguageModel(
        source.location, tokenizer=tokenizer, device_map=device_map, dtype=torch.float32, dispatch=True
    )
    nn_model._module.eval()
    devices = {p.device.type + str(p.device.index) for p in nn_model._module.parameters()}
    assert len(devices) >= 2
    model = LoadedModel(NAME, nn_model, tokenizer, n, 576, "spread", False, source.card)
    items = _items(tokenizer, 4)
    fast_v, plain_v, fast, plain = _run_both(model, items)
    torch.testing.assert_close(fast_v.float().cpu(), plain_v.float().cpu(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(fast.steered, plain.steered, atol=1e-4)


def test_device_auto_loads_and_fast_runs():
    from remote_steer.models.loading import load_model, resolve

    model = load_model(resolve(NAME), dtype="bfloat16", device="auto")
    items = _items(model.tokenizer, 4)
    fast_v, plain_v, fast, plain = _run_both(model, items)
    tol = BF16_ATOL + BF16_RTOL * np.abs(plain.steered)
    assert (np.abs(fast.steered - plain.steered) <= tol).all()


def test_gpu_check_script_smoke(tmp_path):
    """The GPU session's one command, on small shapes (the full run is `python tests/gpu_check.py`)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "tests/gpu_check.py", "--smoke", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "gpu_check.md").exists()
