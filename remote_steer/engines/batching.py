"""Token batches for tracing, built outside the trace so trace bodies stay tensor-only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenBatch:
    """Left-padded rows: the last real token of every row sits at index -1."""

    input_ids: torch.Tensor  # [rows, width]
    attention_mask: torch.Tensor  # [rows, width]
    position_ids: torch.Tensor  # [rows, width]; each row counts from its first real token
    pad: torch.Tensor  # [rows] left-pad length of each row

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1])

    def model_inputs(self) -> dict[str, torch.Tensor]:
        # position_ids are passed explicitly so padding never shifts a row's positions.
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }

    def mask_from(self, starts: Sequence[int]) -> torch.Tensor:
        """[rows, width] bool: True at a row's real positions >= its ``starts`` entry."""
        columns = torch.arange(self.width)[None, :]
        begin = self.pad + torch.as_tensor(list(starts), dtype=torch.long)
        return columns >= begin[:, None]


def trace_inputs(batch: TokenBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """What a trace body may hold of a batch: plain tensors, never the ``TokenBatch``.

    A remote server has no ``remote_steer`` to unpickle a project object with, so a
    session body sees the model inputs, position ids and attention mask as tensors.
    """
    return batch.model_inputs(), batch.position_ids, batch.attention_mask


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    pad = width - mask.sum(-1)
    return TokenBatch(ids, mask, positions, pad)


def chunks(seq: Sequence, size: int) -> list[Sequence]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]
