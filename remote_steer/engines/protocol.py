"""The one shape every engine has, and the one decision between the fast and plain path.

An engine is built from a model, a backend and its batch settings, and answers one call::

    result = engine.run(items, vectors, configs, on_rows, request_key)

``items`` are encoded prompts, ``vectors`` [layers, hidden] the steering vectors (in the
units the configurations' strengths are in), ``configs`` the (layer, strength) pairs;
``on_rows(n)`` reports progress, ``request_key`` names the request in the run's journal
so a rerun resumes it. Every engine makes its forward passes the same way: open a
request on the backend, run the session body only if the request must be submitted,
then read the saved values from ``request.result`` (``remote/backend.py``).

Implementations, in pairs: ``sweep_plain.LogitDiffEngine`` / ``sweep_fast.FastLogitDiffEngine``
(logit diffs, ``SweepResult``), ``generation_plain.GenerationEngine`` /
``generation_fast.FastGenerationEngine`` (greedy answers, ``GenerationResult``);
extraction is ``extraction.extract_caa`` / ``sweep_fast.extract_caa_fast``. Which of a
pair runs is decided by ``fast_path`` alone; ``engines/choice.py`` builds the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import torch

    from remote_steer.data.prompts import EncodedItem
    from remote_steer.engines.sweep_plain import SteerConfig
    from remote_steer.models.loading import LoadedModel

    Items = Sequence[EncodedItem]
    Configs = Sequence[SteerConfig]
    OnRows = Callable[[int], None] | None

ResultT_co = TypeVar("ResultT_co", covariant=True)


class Engine(Protocol[ResultT_co]):
    """What the run's stages call: one request per ``run`` call."""

    model: LoadedModel

    def run(
        self,
        items: Items,
        vectors: torch.Tensor,
        configs: Configs,
        on_rows: OnRows = None,
        request_key: str | None = None,
    ) -> ResultT_co: ...


def fast_path(model: LoadedModel, wanted: str = "fast") -> tuple[bool, str]:
    """Whether the fast engines run for ``model``, and why, in one line.

    ``wanted`` is the spec's ``engine`` ("fast" or "plain"). The fast path needs the
    model's architecture in ``models.architectures``' table, laid out as it says;
    otherwise the plain engines run (same numbers, more work) and the reason says why.
    """
    if wanted != "fast":
        return False, f'plain engines: engine = "{wanted}"'
    refusal = model.fast_path_refusal
    if refusal is not None:
        return False, f"plain engines, not the fast path: {refusal}"
    return True, "fast engines"
