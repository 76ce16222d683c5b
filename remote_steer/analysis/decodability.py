"""Decodability by depth (docs/depth.md): where a concept becomes linearly readable.

From the extraction pass's per-item readouts (``engines.sweep_fast.Readout``: the
answer-token residual after every layer, matching and other answer appended, and the
logit lens at the position that predicts the answer letter), per layer:

- ``caa_accuracy``: the CAA direction as a one-dimensional classifier. Within each
  cross-validation fold the direction is the mean of the training items' positive −
  negative differences and the threshold the midpoint of the training items' two
  class means along it; accuracy is over the held-out items' rows (matching vs other).
- ``probe_accuracy``: an L2-regularised logistic regression on the (fold-standardised)
  residuals, same folds. Folds split by item, so an item's two rows are never on
  both sides.
- ``lens_mean`` / ``lens_agreement``: the logit lens, logit(matching) − logit(other)
  read from the layer through the final norm and unembedding (soft-capped where the
  model caps), its mean and how often its sign agrees with the model's final answer
  (the last layer's lens is the model's own logit difference).

Held-out items are the cross-validation folds of the training split: no forward
pass beyond the extraction's, and the run's test split stays for steering.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from remote_steer.models.registry import layer_depth

DECODABILITY_TABLE = "decodability"
FOLDS = 5
PROBE_C = 1.0  # inverse L2 strength, as scikit-learn's C (penalty ||w||² / (2C))
REMOTE_DIMS = 64  # remote readouts: a seeded random subspace of this many dimensions


def readout_basis(hidden: int, remote: bool, seed: int, dims: int = REMOTE_DIMS) -> torch.Tensor:
    """The readout's basis: empty (the whole residual) locally; remotely a seeded random
    orthonormal [hidden, dims] basis, so rows × layers × dims floats come back."""
    if not remote or dims >= hidden:
        return torch.empty(0)
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, dims, generator=generator, dtype=torch.float64))
    return q.float().contiguous()


def readout_bytes(n_items: int, n_layers: int, dims: int) -> int:
    """Bytes one concept's readout brings back: two answer rows × layers × dims float32
    per item plus the logit lens (layers float32 per item)."""
    return n_items * n_layers * (2 * dims + 1) * 4


def item_folds(strata: list[str], folds: int, seed: int) -> list[np.ndarray]:
    """Held-out item indices per fold, stratified: each stratum (the matching letter) is
    permuted with the seed and dealt round-robin, so every fold keeps the split's A/B
    balance. Unstratified, a fold's letter imbalance flips the training majority and a
    direction that reads only the letter scores below chance on the held-out items."""
    n_items = len(strata)
    k = max(2, min(folds, n_items))
    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    dealt = 0
    for stratum in sorted(set(strata)):
        members = [i for i, s in enumerate(strata) if s == stratum]
        for i in rng.permutation(members):
            out[dealt % k].append(int(i))
            dealt += 1
    return [np.sort(np.array(part, dtype=int)) for part in out if part]


def spd_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a⁻¹ b for a batch of symmetric positive definite ``a`` [B, p, p] and ``b`` [B, p, k], by
    Cholesky. Not ``torch.linalg.solve``: its batched LU hangs in MKL's DLASWP with more than
    one thread on some shapes (torch 2.13 CPU, e.g. [18, 640, 640] doubles; a Gemma 3 270M run)."""
    return torch.cholesky_solve(b, torch.linalg.cholesky(a))


def fit_logistic(x: torch.Tensor, y: torch.Tensor, c: float = PROBE_C, iters: int = 100) -> torch.Tensor:
    """L2-regularised logistic regression, B problems at once: x [B, n, p], y [n] in {0, 1}.

    Minimises Σ log-loss + ||w||² / (2c) (every coefficient penalised, as scikit-learn's
    with ``fit_intercept=False``) by Newton's method with step halving; when p > n the
    Newton system is solved in the n-dimensional form (Woodbury). Returns w [B, p]."""
    x, y = x.double(), y.double()
    batch, n, p = x.shape
    lam = 1.0 / c
    w = torch.zeros(batch, p, dtype=torch.float64)

    def loss(w):
        z = torch.einsum("bnp,bp->bn", x, w)
        return torch.nn.functional.softplus(z).sum(1) - (z * y).sum(1) + 0.5 * lam * (w * w).sum(1)

    current = loss(w)
    for _ in range(iters):
        prob = torch.sigmoid(torch.einsum("bnp,bp->bn", x, w))
        grad = torch.einsum("bnp,bn->bp", x, prob - y) + lam * w
        s = (prob * (1 - prob)).clamp_min(1e-12)
        if p <= n:
            hess = torch.einsum("bnp,bn,bnq->bpq", x, s, x) + lam * torch.eye(p, dtype=x.dtype)
            step = spd_solve(hess, grad[:, :, None])[:, :, 0]
        else:
            a = s.sqrt()[:, :, None] * x  # [B, n, p]
            inner = torch.eye(n, dtype=x.dtype) * lam + a @ a.transpose(1, 2)
            step = (grad - (a.transpose(1, 2) @ spd_solve(inner, (a @ grad[:, :, None])))[:, :, 0]) / lam
        scale = torch.ones(batch, dtype=x.dtype)
        for _ in range(30):  # halve where the loss would rise
            trial = w - scale[:, None] * step
            new = loss(trial)
            worse = new > current + 1e-12 * current.abs()
            if not bool(worse.any()):
                break
            scale = torch.where(worse, scale / 2, scale)
        w, current = trial, new
        if float((scale[:, None] * step).abs().max()) < 1e-10:
            break
    return w


def _rows(positive: torch.Tensor, negative: torch.Tensor, items: np.ndarray) -> torch.Tensor:
    """[layers, 2 × len(items), k]: the items' positive rows, then their negative rows."""
    index = torch.as_tensor(items, dtype=torch.long)
    return torch.cat([positive[index], negative[index]]).transpose(0, 1).double()


def caa_accuracy(positive: torch.Tensor, negative: torch.Tensor, folds: list[np.ndarray]) -> np.ndarray:
    """[layers] held-out accuracy of the CAA direction as a classifier (module docstring)."""
    n = positive.shape[0]
    correct = np.zeros(positive.shape[1])
    for held in folds:
        train = np.setdiff1d(np.arange(n), held)
        direction = (positive[train] - negative[train]).double().mean(0)  # [layers, k]
        pos_train = torch.einsum("nlk,lk->nl", positive[train].double(), direction).mean(0)
        neg_train = torch.einsum("nlk,lk->nl", negative[train].double(), direction).mean(0)
        threshold = (pos_train + neg_train) / 2
        pos = torch.einsum("nlk,lk->nl", positive[held].double(), direction)
        neg = torch.einsum("nlk,lk->nl", negative[held].double(), direction)
        credit = _side(pos - threshold).sum(0) + _side(threshold - neg).sum(0)
        correct += credit.numpy()
    return correct / (2 * n)


def _side(margin: torch.Tensor) -> torch.Tensor:
    """1 on the right side of the threshold, 0 on the wrong one, ½ on it (a tie is a coin flip)."""
    return (torch.sign(margin) + 1) / 2


def probe_fit(x_train: torch.Tensor, y: torch.Tensor, c: float = PROBE_C):
    """Standardise [layers, rows, k] on its own rows, add a constant column, fit. Returns
    (w [layers, k + 1], mean, std) so that the probe reads ((x − mean) / std, 1) · w."""
    mean = x_train.mean(1, keepdim=True)
    std = x_train.std(1, keepdim=True).clamp_min(1e-6)
    z = (x_train - mean) / std
    z = torch.cat([z, torch.ones(*z.shape[:2], 1, dtype=z.dtype)], dim=2)
    return fit_logistic(z, y, c), mean, std


def probe_accuracy(
    positive: torch.Tensor, negative: torch.Tensor, folds: list[np.ndarray], c: float = PROBE_C
) -> np.ndarray:
    """[layers] held-out accuracy of the logistic-regression probe (module docstring)."""
    n = positive.shape[0]
    correct = np.zeros(positive.shape[1])
    for held in folds:
        train = np.setdiff1d(np.arange(n), held)
        y = torch.cat([torch.ones(len(train)), torch.zeros(len(train))])
        w, mean, std = probe_fit(_rows(positive, negative, train), y, c)
        x = (_rows(positive, negative, held) - mean) / std
        z = torch.einsum("lnk,lk->ln", x, w[:, :-1]) + w[:, -1:]
        truth = torch.cat([torch.ones(len(held)), torch.zeros(len(held))]).bool()
        correct += _side(torch.where(truth[None], z, -z)).sum(1).numpy()
    return correct / (2 * n)


def probe_direction(positive: torch.Tensor, negative: torch.Tensor, c: float = PROBE_C) -> torch.Tensor:
    """[layers, k]: the probe fitted on every item, its weights mapped back to residual
    coordinates (w / std), unit norm, signed to agree with the mean difference."""
    n = positive.shape[0]
    y = torch.cat([torch.ones(n), torch.zeros(n)])
    w, _, std = probe_fit(_rows(positive, negative, np.arange(n)), y, c)
    direction = w[:, :-1] / std[:, 0]
    mean_diff = (positive - negative).double().mean(0)
    sign = torch.sign((direction * mean_diff).sum(1, keepdim=True))
    sign[sign == 0] = 1
    direction = direction * sign
    return (direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-30)).float()


def lens_curves(lens: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """[layers] mean logit-lens difference and the fraction of items whose sign at the
    layer agrees with the model's final answer (the last layer's sign)."""
    final = torch.sign(lens[:, -1:])
    agreement = (torch.sign(lens) == final).double().mean(0)
    return lens.double().mean(0).numpy(), agreement.numpy()


def decodability_frame(
    readout, letters: list[str], *, model: str, concept: str, training: str, seed: int
) -> pd.DataFrame:
    """One row per layer: the four curves (module docstring) for one model × concept;
    ``letters``: each item's matching letter (the folds' strata)."""
    positive, negative, lens = readout.positive, readout.negative, readout.lens
    n_items, n_layers, dims = positive.shape
    folds = item_folds(letters, FOLDS, seed)
    caa = caa_accuracy(positive, negative, folds)
    probe = probe_accuracy(positive, negative, folds)
    lens_mean, agreement = lens_curves(lens)
    return pd.DataFrame(
        {
            "model": model,
            "dataset": concept,
            "layer": np.arange(n_layers),
            "layer_fraction": [layer_depth(layer, n_layers) for layer in range(n_layers)],
            "n_layers": n_layers,
            "caa_accuracy": caa,
            "probe_accuracy": probe,
            "lens_mean": lens_mean,
            "lens_agreement": agreement,
            "n_items": n_items,
            "folds": len(folds),
            "readout_dims": dims,
            "training": training,
        }
    )
