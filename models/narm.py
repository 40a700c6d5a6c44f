"""NARM (Li et al., CIKM 2017): a GRU encoder with a global (last state) and an attentive local session summary.

RecBole's defaults: embedding 64, hidden 128 (here hidden = 2 d), one GRU layer without biases.
"""

import torch
from torch import Tensor, nn

from etude.models.common import MAX_SESSION_LENGTH, SessionModel, gather_last


class NARM(SessionModel):
    def __init__(
        self,
        *,
        catalog_size: int,
        dim: int,
        hidden: int = 0,
        layers: int = 1,
        max_session_length: int = MAX_SESSION_LENGTH,
    ) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim, max_session_length=max_session_length)
        hidden = hidden if hidden > 0 else 2 * dim
        self.gru = nn.GRU(dim, hidden, num_layers=layers, bias=False, batch_first=True)
        self.a_1 = nn.Linear(hidden, hidden, bias=False)
        self.a_2 = nn.Linear(hidden, hidden, bias=False)
        self.v_t = nn.Linear(hidden, 1, bias=False)
        self.b = nn.Linear(2 * hidden, dim, bias=False)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        out, _ = self.gru(self.item_embedding(seq))  # [B, L, h]
        c_global = gather_last(out, lens)  # [B, h]
        mask = (seq > 0).unsqueeze(2).to(out.dtype)  # [B, L, 1]
        alpha = self.v_t(mask * torch.sigmoid(self.a_1(out) + self.a_2(c_global).unsqueeze(1)))  # [B, L, 1]
        c_local = (alpha * out).sum(1)  # [B, h]
        session: Tensor = self.b(torch.cat([c_local, c_global], 1))  # [B, d]
        return session
