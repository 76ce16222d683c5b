"""Where traces run. A backend is a value handed to the stages, not a fork of them:
the same tracing code runs locally and, through nnsight's remote execution, on NDIF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import SpecError

BackendKind = Literal["local", "simulated-remote"]
BACKEND_KINDS: tuple[str, ...] = ("local", "simulated-remote")


@dataclass
class Backend:
    """``local`` runs traces in-process. ``simulated-remote`` runs them through
    nnsight's remote serialization path in-process (``remote="local"``), which proves
    a trace body survives shipping without a server.
    """

    kind: BackendKind = "local"
    # Traffic bookkeeping, per stage; written to the manifest.
    requests: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in BACKEND_KINDS:
            raise SpecError(f"backend {self.kind!r}: expected one of {', '.join(BACKEND_KINDS)}")

    def trace_kwargs(self, stage: str) -> dict[str, Any]:
        """Keyword arguments for ``model.trace`` on this backend; counts the request."""
        self.requests[stage] = self.requests.get(stage, 0) + 1
        if self.kind == "simulated-remote":
            return {"remote": "local"}
        return {}
