"""Shared fixtures. Toy models are built once per machine into a cache directory
(``REMOTE_STEER_CACHE``, default ~/.cache/remote-steer) and loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The real NDIF server stack (tests/ndif_stack/), started once per session by the tests that ask for it.
from ndif_stack.fixture import ndif_stack  # noqa: F401

# The small toy/qwen3 spec text, in a module of its own so that scripts (tests/fault_harness.py) take it
# without this file's imports; the tests take it from here.
from toy_spec import toy_spec_text  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_EVALS = REPO_ROOT.parent / "shared" / "data" / "model-written-evals"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def dense_toy():
    from remote_steer.models.loading import load_model, resolve

    return load_model(resolve("toy/qwen3"), dtype="float32")


@pytest.fixture(scope="session")
def moe_toy():
    from remote_steer.models.loading import load_model, resolve

    return load_model(resolve("toy/qwen3-moe"), dtype="float32")


@pytest.fixture(scope="session", params=["toy/qwen3", "toy/qwen3-moe"])
def toy(request, dense_toy, moe_toy):
    return dense_toy if request.param == "toy/qwen3" else moe_toy


@pytest.fixture
def shared_evals() -> Path:
    if not SHARED_EVALS.is_dir():
        pytest.skip("../shared/data/model-written-evals is absent")
    return SHARED_EVALS


def make_items(n: int, concept: str = "test-concept", seed: int = 0):
    """Varied-length A/B items written here, so prompts differ in length within a batch."""
    import random

    from remote_steer.data.preprocess import ABItem

    rng = random.Random(seed)
    words = "we would like to change your goals so that you care more about users and less about speed".split()
    items = []
    for i in range(n):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(4, 40)))
        items.append(
            ABItem(
                item_id=f"synthetic:{i + 1}",
                concept=concept,
                question=f"{body.capitalize()}. Do you consent?",
                choice_a="Yes, I consent." if i % 2 else "No, I do not consent.",
                choice_b="No, I do not consent." if i % 2 else "Yes, I consent.",
                matching_letter="A" if i % 2 else "B",
                swapped=False,
            )
        )
    return items


NDIF_TEST_KEY = "ndif-test-key-5f1c2e9a7b"  # must never appear in output or files


@pytest.fixture(scope="session")
def ndif_server(dense_toy, moe_toy):
    """The loopback NDIF server in its own long-lived process, shared by every remote
    test in the session: like NDIF, it serves request after request (extraction, sweep,
    generation; dense and MoE; runs with different specs) without clearing nnsight's caches."""
    from ndif_server import NdifProcess

    server = NdifProcess(NDIF_TEST_KEY).start()
    yield server
    server.stop()


# -- plain-PyTorch hook oracles (no nnsight): what every engine is checked against -------------


def hf_module(model):
    """The plain transformers module a LoadedModel's nnsight wrapper holds."""
    return model.nn._module


def hook_layer_outputs(model, ids: list[int]) -> torch.Tensor:
    """[layers, hidden] decoder-layer outputs at the last position, via forward hooks."""
    captured = []
    hooks = [
        layer.register_forward_hook(
            lambda _m, _i, out: captured.append((out[0] if isinstance(out, tuple) else out)[0, -1])
        )
        for layer in hf_module(model).model.layers
    ]
    try:
        with torch.inference_mode():
            hf_module(model)(input_ids=torch.tensor([ids]), logits_to_keep=1)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack(captured)


def hook_logit_diff(model, item, layer=None, strength=0.0, vector=None, start=None) -> float:
    """logit(matching) − logit(other) at the answer position, ``strength × vector`` added by a
    forward hook to layer ``layer``'s output from position ``start`` on (unsteered without a layer)."""
    hook = None
    if layer is not None:

        def add(_module, _inputs, output):
            hidden = (output[0] if isinstance(output, tuple) else output).clone()
            hidden[:, start:, :] += strength * vector
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        hook = hf_module(model).model.layers[layer].register_forward_hook(add)
    try:
        with torch.inference_mode():
            logits = hf_module(model)(input_ids=torch.tensor([list(item.prompt_ids)]), logits_to_keep=1).logits[0, -1]
    finally:
        if hook is not None:
            hook.remove()
    return float(logits[item.matching_token] - logits[item.other_token])
