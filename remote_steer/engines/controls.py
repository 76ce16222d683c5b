"""Control and bootstrap vectors: what any direction of that size would do, and how much
the vector itself varies with the training items.

- **Random directions**: per layer, a Gaussian direction scaled to the real vector's norm
  at that layer (drawn here, no model needed).
- **Shuffled-label CAA vectors**: the matching letters permuted within the training set;
  item i's difference (positive − negative) keeps its sign where the permuted letter equals
  its own and flips where it does not. A ±1 weight row per shuffle.
- **Bootstrap vectors**: training items resampled with replacement; a row of counts.

Shuffled and bootstrap vectors come out of the extraction pass itself: a [V, items]
weight matrix multiplies the per-item differences inside the trace
(``extract_caa_fast_weighted``), so only V × layers × hidden leaves the model.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

RANDOM, SHUFFLED, BOOTSTRAP = "random", "shuffled", "bootstrap"


def rng_for(seed: int, model: str, concept: str, purpose: str) -> np.random.Generator:
    """Seeded by the names, not positions, so adding a model leaves another's controls unchanged."""
    return np.random.default_rng([seed, zlib.crc32(f"{model}\x00{concept}\x00{purpose}".encode())])


def shuffled_weights(matching_letters: Sequence[str], n: int, rng: np.random.Generator) -> torch.Tensor:
    """[n, items] ±1: +1 where a permutation of the letters leaves an item's letter as it was."""
    letters = np.asarray(list(matching_letters))
    rows = [np.where(rng.permutation(letters) == letters, 1.0, -1.0) for _ in range(n)]
    return torch.tensor(np.array(rows).reshape(n, len(letters)), dtype=torch.float32)


def bootstrap_weights(n_items: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    """[n, items] resampling counts (each row sums to ``n_items``)."""
    return torch.tensor(rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n), dtype=torch.float32)


def random_directions(vectors: torch.Tensor, n: int, rng: np.random.Generator) -> torch.Tensor:
    """[n, layers, hidden]: per layer, uniformly random directions with the norm of ``vectors[layer]``."""
    layers, hidden = vectors.shape
    draws = torch.tensor(rng.standard_normal((n, layers, hidden)), dtype=torch.float32)
    draws = draws / draws.norm(dim=-1, keepdim=True)
    return draws * vectors.norm(dim=-1)[None, :, None]


def extraction_weights(
    matching_letters: Sequence[str], n_shuffled: int, n_bootstrap: int, seed: int, model: str, concept: str
) -> tuple[torch.Tensor | None, list[tuple[str, int]]]:
    """The weight rows the extraction pass applies, and (kind, index) for each."""
    n_items = len(matching_letters)
    parts, kinds = [], []
    if n_shuffled:
        parts.append(shuffled_weights(matching_letters, n_shuffled, rng_for(seed, model, concept, SHUFFLED)))
        kinds += [(SHUFFLED, i) for i in range(n_shuffled)]
    if n_bootstrap:
        parts.append(bootstrap_weights(n_items, n_bootstrap, rng_for(seed, model, concept, BOOTSTRAP)))
        kinds += [(BOOTSTRAP, i) for i in range(n_bootstrap)]
    return (torch.cat(parts) if parts else None), kinds
