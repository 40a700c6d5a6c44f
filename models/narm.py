"""NARM (Li et al., CIKM 2017): a GRU encoder with a global (last state) and an attentive local session summary."""

import torch
from torch import Tensor, nn

from models.common import SessionModel, gather_last


class NARM(SessionModel):
    def __init__(self, *, catalog_size: int, dim: int) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim)
        self.gru = nn.GRU(dim, dim, bias=False, batch_first=True)
        self.a_1 = nn.Linear(dim, dim, bias=False)
        self.a_2 = nn.Linear(dim, dim, bias=False)
        self.v_t = nn.Linear(dim, 1, bias=False)
        self.b = nn.Linear(2 * dim, dim, bias=False)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        out, _ = self.gru(self.item_embedding(seq))  # [B, L, d]
        c_global = gather_last(out, lens)  # [B, d]
        mask = (seq > 0).unsqueeze(2).to(out.dtype)  # [B, L, 1]
        alpha = self.v_t(mask * torch.sigmoid(self.a_1(out) + self.a_2(c_global).unsqueeze(1)))  # [B, L, 1]
        c_local = (alpha * out).sum(1)  # [B, d]
        hidden: Tensor = self.b(torch.cat([c_local, c_global], 1))  # [B, d]
        return hidden
