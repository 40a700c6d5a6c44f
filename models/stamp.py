"""STAMP (Liu et al., KDD 2018): short-term attention/memory priority over the session and its last click.

As in RecBole, the session is padded to the maximum length with item 0, the session mean is the sum over all
positions (padding included) divided by the session length, and the attention spans the padding too: a
trained padding row is not zero, so this is what makes the ranking RecBole's.
"""

import torch
from torch import Tensor, nn

from etude.models.common import MAX_SESSION_LENGTH, SessionModel, gather_last


class STAMP(SessionModel):
    def __init__(self, *, catalog_size: int, dim: int, max_session_length: int = MAX_SESSION_LENGTH) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim, max_session_length=max_session_length)
        self.pad_to = max_session_length
        self.w0 = nn.Linear(dim, 1, bias=False)
        self.w1 = nn.Linear(dim, dim, bias=False)
        self.w2 = nn.Linear(dim, dim, bias=False)
        self.w3 = nn.Linear(dim, dim, bias=False)
        self.b_a = nn.Parameter(torch.zeros(dim))
        self.mlp_a = nn.Linear(dim, dim)
        self.mlp_b = nn.Linear(dim, dim)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        emb = self.item_embedding(seq)  # [B, L, d], L = the maximum length
        last = gather_last(emb, lens)  # [B, d]
        ms = emb.sum(1) / lens.unsqueeze(1).to(emb.dtype)  # [B, d] RecBole's session "mean"
        alpha = self.w0(
            torch.sigmoid(self.w1(emb) + self.w2(last).unsqueeze(1) + self.w3(ms).unsqueeze(1) + self.b_a)
        )  # [B, L, 1]
        ma = (alpha * emb).sum(1) + ms  # [B, d]
        return torch.tanh(self.mlp_a(ma)) * torch.tanh(self.mlp_b(last))  # [B, d]
