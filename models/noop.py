"""noop: the paper's infrastructure test. Returns the items 0..k-1 for every session without computing anything."""

import torch
from torch import Tensor, nn

from etude.models.common import MAX_SESSION_LENGTH


class Noop(nn.Module):
    catalog_size: int
    max_session_length: int

    def __init__(self, *, catalog_size: int, dim: int = 1) -> None:
        super().__init__()
        if catalog_size < 1:
            raise ValueError(f"catalog_size must be >= 1, got {catalog_size}")
        self.catalog_size = catalog_size
        self.max_session_length = MAX_SESSION_LENGTH
        self.dim = dim

    def forward(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        if k < 1 or k > self.catalog_size:
            raise ValueError("k must be in [1, catalog_size]")
        return torch.arange(k, device=item_seq.device).unsqueeze(0).expand(item_seq.size(0), k).contiguous()
