"""SR-GNN (Wu et al., AAAI 2019): a gated GNN over the session graph, attention readout with the last click.

RecBole builds the session graph with numpy inside `forward` (a host round-trip per batch on a GPU, and a graph
frozen into the model when traced). Here `common.session_graph` builds it with batched torch ops on the model's
device, so the scripted model handles every session structure.
"""

import torch
from torch import Tensor, nn

from etude.models.common import MAX_SESSION_LENGTH, GNNCell, SessionModel, gather_last, session_graph


class SRGNN(SessionModel):
    def __init__(
        self, *, catalog_size: int, dim: int, steps: int = 1, max_session_length: int = MAX_SESSION_LENGTH
    ) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim, max_session_length=max_session_length)
        self.gnn = GNNCell(dim=dim, steps=steps)
        self.linear_one = nn.Linear(dim, dim)
        self.linear_two = nn.Linear(dim, dim)
        self.linear_three = nn.Linear(dim, 1, bias=False)
        self.linear_transform = nn.Linear(2 * dim, dim)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        nodes, alias, a_in, a_out = session_graph(seq, lens)  # [B, N], [B, L], [B, N, N] x 2
        hidden = self.gnn(a_in, a_out, self.item_embedding(nodes))  # [B, N, d]
        seq_hidden = hidden.gather(1, alias.unsqueeze(2).expand(-1, -1, hidden.size(2)))  # [B, L, d]
        ht = gather_last(seq_hidden, lens)  # [B, d]
        alpha = self.linear_three(torch.sigmoid(self.linear_one(ht).unsqueeze(1) + self.linear_two(seq_hidden)))
        mask = (seq > 0).unsqueeze(2).to(seq_hidden.dtype)  # [B, L, 1]
        a = (alpha * seq_hidden * mask).sum(1)  # [B, d]
        out: Tensor = self.linear_transform(torch.cat([a, ht], 1))  # [B, d]
        return out
