"""remote-steer: CAA steering sweeps with nnsight, locally or on NDIF.

The Python API (imported lazily, so ``import remote_steer`` stays light)::

    import remote_steer as rs

    run = rs.run_spec("experiments/quickstart.toml")   # run or resume a spec → Run
    run = rs.open_run("outputs/quickstart")            # open a finished run directory
    run.results, run.summary, run.generation, run.manifest
    vector = run.vector("toy/qwen3", "corrigibility")  # SteeringVector, every layer

    model = rs.load_model("toy/qwen3")                 # nnsight model + tokenizer
    with vector.steer(model.nn._module, layer=4, strength=2.0):   # plain PyTorch hook
        ...
    with model.nn.trace(ids):                           # or inside an nnsight trace
        h = model.layers[4].output
        model.layers[4].output = vector.add(h, 4, 2.0)

Names: ``run_spec``, ``open_run``, ``load_spec``, ``load_model``, ``Run``,
``SteeringVector``, ``steering_addend``, ``export_vectors``. (Not ``run``:
``remote_steer.run`` is the subpackage holding the runner.)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "run_spec": "remote_steer.api",
    "open_run": "remote_steer.api",
    "load_spec": "remote_steer.api",
    "load_model": "remote_steer.api",
    "Run": "remote_steer.api",
    "RunNotFound": "remote_steer.api",
    "SteeringVector": "remote_steer.vectors",
    "steering_addend": "remote_steer.vectors",
    "export_vectors": "remote_steer.export",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'remote_steer' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
