"""STAMP (Liu et al., KDD 2018): short-term attention/memory priority over the session and its last click."""

import torch
from torch import Tensor, nn

from models.common import SessionModel, gather_last


class STAMP(SessionModel):
    def __init__(self, *, catalog_size: int, dim: int) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim)
        self.w0 = nn.Linear(dim, 1, bias=False)
        self.w1 = nn.Linear(dim, dim, bias=False)
        self.w2 = nn.Linear(dim, dim, bias=False)
        self.w3 = nn.Linear(dim, dim, bias=False)
        self.b_a = nn.Parameter(torch.zeros(dim))
        self.mlp_a = nn.Linear(dim, dim)
        self.mlp_b = nn.Linear(dim, dim)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        emb = self.item_embedding(seq)  # [B, L, d]; padding rows are zero
        last = gather_last(emb, lens)  # [B, d]
        ms = emb.sum(1) / lens.unsqueeze(1).to(emb.dtype)  # [B, d] session mean
        alpha = self.w0(
            torch.sigmoid(self.w1(emb) + self.w2(last).unsqueeze(1) + self.w3(ms).unsqueeze(1) + self.b_a)
        )  # [B, L, 1]
        ma = (alpha * emb).sum(1) + ms  # [B, d]
        return torch.tanh(self.mlp_a(ma)) * torch.tanh(self.mlp_b(last))  # [B, d]
