"""Which direction steers best (docs/depth.md): four extraction methods on the same readouts.

Every method reads the extraction pass's per-item answer-token residuals
(``engines.sweep_fast.Readout``, the whole residual: a local run) and returns one
unit direction per layer, [layers, hidden]:

- ``mean_diff``: the mean of the paired differences positive − negative (CAA, today's);
- ``pca``: the first principal component of the paired differences (centred, as
  repeng's ``pca_diff``), its sign fixed to agree with the mean difference;
- ``probe``: the L2 logistic probe's weight direction (``decodability.probe_direction``);
- ``whitened``: the mean difference through the inverse of a shrunk within-class
  covariance, Σ_s = (1 − α) Σ + α (tr Σ / d) I with α = ``SHRINKAGE``.

``scaled`` takes them to residual units (each layer's vector at the layer's mean
residual norm), so every method steers at the same size.
"""

from __future__ import annotations

import torch

from remote_steer.analysis.decodability import probe_direction, spd_solve
from remote_steer.analysis.summaries import METHODS

__all__ = ["METHODS", "SHRINKAGE", "directions", "pca_direction", "scaled", "whitened_direction"]
SHRINKAGE = 0.5


def _unit(direction: torch.Tensor) -> torch.Tensor:
    return direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def _signed(direction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    sign = torch.sign((direction * reference).sum(-1, keepdim=True))
    return direction * torch.where(sign == 0, torch.ones_like(sign), sign)


def pca_direction(diffs: torch.Tensor) -> torch.Tensor:
    """[layers, hidden]: the first principal component of the centred differences
    ([items, layers, hidden]), signed to agree with their mean."""
    x = diffs.double().transpose(0, 1)  # [layers, items, hidden]
    centred = x - x.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return _signed(vh[:, 0], x.mean(1)).float()


def whitened_direction(positive: torch.Tensor, negative: torch.Tensor, shrinkage: float = SHRINKAGE) -> torch.Tensor:
    """[layers, hidden]: Σ_s⁻¹ · mean difference, Σ_s the shrunk pooled within-class covariance."""
    pos, neg = positive.double().transpose(0, 1), negative.double().transpose(0, 1)  # [layers, items, hidden]
    within = torch.cat([pos - pos.mean(1, keepdim=True), neg - neg.mean(1, keepdim=True)], dim=1)
    hidden = within.shape[-1]
    cov = within.transpose(1, 2) @ within / max(1, within.shape[1] - 2)
    scale = torch.diagonal(cov, dim1=1, dim2=2).mean(1)[:, None, None]
    shrunk = (1 - shrinkage) * cov + shrinkage * scale * torch.eye(hidden, dtype=cov.dtype)
    mean_diff = (pos - neg).mean(1)
    return _signed(spd_solve(shrunk, mean_diff[:, :, None])[:, :, 0], mean_diff).float()


def directions(positive: torch.Tensor, negative: torch.Tensor) -> dict[str, torch.Tensor]:
    """{method: [layers, hidden] unit directions} from [items, layers, hidden] readouts."""
    diffs = positive - negative
    return {
        "mean_diff": _unit(diffs.double().mean(0)).float(),
        "pca": _unit(pca_direction(diffs)),
        "probe": _unit(probe_direction(positive, negative)),
        "whitened": _unit(whitened_direction(positive, negative)),
    }


def scaled(direction: torch.Tensor, residual_norms: torch.Tensor) -> torch.Tensor:
    """A unit direction per layer at that layer's mean residual norm (residual units)."""
    return direction * residual_norms.to(direction.dtype)[:, None]
