"""A CPU model actor for NDIF's own server (ndif 0.1.2), for a stack with no GPU.

ndif's stock ``ModelActor`` calls CUDA unconditionally (``set_device``, ``synchronize``,
the placement check). This class loads the model on the CPU in the dtype the deployment
asks for and makes no CUDA call; everything else (queue, run, results, errors, restarts)
is ndif's own code. Select it with ndif's extension points: ``actor_class`` in the
deploy YAML, or ``NDIF_MODEL_IMPORT_PATH`` for models deployed on demand.

It runs inside the server's own venv, so it imports only ndif, nnsight, ray and torch:
never ``remote_steer``.
"""

from __future__ import annotations

import gc
from typing import Any

import ray
from ndif.services.ray.deployments.modeling.base import BaseModelDeployment
from nnsight.modeling.huggingface import HuggingFaceModel


class CPUModelDeployment(BaseModelDeployment):
    # Parking HOT -> WARM moves weights GPU -> CPU; on the CPU there is nothing to park.
    CACHEABLE = False

    def __init__(self, model_key: str, execution_timeout: float | None = None, gpu_mem_bytes_by_id=None, **kwargs: Any):
        # The controller assigns the node's one logical GPU; the CPU actor holds none, so the
        # per-GPU accounting (baselines, peaks, limits) has nothing to walk.
        super().__init__(model_key, execution_timeout, None, **kwargs)

    def load_from_disk(self) -> HuggingFaceModel:
        model = HuggingFaceModel.from_model_key(self.model_key, dispatch=True, dtype=self.dtype_name, **self.kwargs)
        model._module.requires_grad_(False)
        return model

    def cleanup(self) -> None:
        self.kill_switch.clear()
        self.kill_reason = None
        self.execution_ident = None
        self.model.interleaver.cancel()
        gc.collect()


@ray.remote(num_cpus=1, max_restarts=-1)
class CPUModelActor(CPUModelDeployment):
    """The Ray actor class the deploy YAML names (``ndif_cpu_actor.CPUModelActor``)."""
