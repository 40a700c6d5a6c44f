"""A tiny TorchScript model that meets the serving contract, for the serving tests (no training, no weights).

`ToyModel` answers item ids `(last item + 1 + j) % C` for j = 0..k-1, so a test can tell whose answer is whose.
Optional knobs, all scriptable: a `poison_item` whose presence makes the forward pass raise, and a `slow_item`
whose presence makes it burn CPU for `slow_iters` small matrix products (requests that stay in flight a while).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


class ToyModel(nn.Module):
    def __init__(
        self,
        *,
        catalog_size: int = 1000,
        max_session_length: int = 50,
        poison_item: int = -1,
        slow_item: int = -1,
        slow_iters: int = 0,
    ) -> None:
        super().__init__()
        self.catalog_size = catalog_size
        self.max_session_length = max_session_length
        self.poison_item = poison_item
        self.slow_item = slow_item
        self.slow_iters = slow_iters

    def forward(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        # item_seq [B, L] right-padded, item_seq_len [B] -> [B, k]
        if self.poison_item >= 0 and bool((item_seq == self.poison_item).any()):
            raise RuntimeError("poison item in batch")
        if self.slow_item >= 0 and bool((item_seq == self.slow_item).any()):
            x = torch.ones(96, 96)
            for _ in range(self.slow_iters):
                x = torch.tanh(x @ x * 0.01)
        last = item_seq.gather(1, (item_seq_len - 1).unsqueeze(1))  # [B, 1]
        return (last + 1 + torch.arange(k, device=item_seq.device).unsqueeze(0)) % self.catalog_size  # [B, k]


def save_toy_model(path: Path, **kwargs: int) -> Path:
    """Script a `ToyModel(**kwargs)` and save it to `path`."""
    torch.jit.script(ToyModel(**kwargs)).save(str(path))
    return path
