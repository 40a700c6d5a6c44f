"""GC-SAN (Xu et al., IJCAI 2019): SR-GNN's gated GNN on the session graph followed by self-attention layers;
the session representation mixes the attention output and the last click's node state (weight 0.6).

The session graph is built with batched torch ops on the model's device (`common.session_graph`), not numpy.
"""

from torch import Tensor

from models.common import (
    GNNCell,
    SessionModel,
    TransformerEncoder,
    attention_mask,
    gather_last,
    heads_for,
    session_graph,
)


class GCSAN(SessionModel):
    weight: float

    def __init__(self, *, catalog_size: int, dim: int, layers: int = 1, heads: int = 1, weight: float = 0.6) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim)
        self.gnn = GNNCell(dim=dim)
        self.encoder = TransformerEncoder(layers=layers, dim=dim, heads=heads_for(dim, heads), inner=4 * dim)
        self.weight = weight

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        nodes, alias, a_in, a_out = session_graph(seq, lens)
        hidden = self.gnn(a_in, a_out, self.item_embedding(nodes))  # [B, N, d]
        seq_hidden = hidden.gather(1, alias.unsqueeze(2).expand(-1, -1, hidden.size(2)))  # [B, L, d]
        ht = gather_last(seq_hidden, lens)  # [B, d]
        at = gather_last(self.encoder(seq_hidden, attention_mask(seq, True)), lens)  # [B, d]
        return self.weight * at + (1 - self.weight) * ht
