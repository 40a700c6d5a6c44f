"""GC-SAN (Xu et al., IJCAI 2019): SR-GNN's gated GNN on the session graph followed by self-attention layers;
the session representation mixes the attention output and the last click's node state (weight 0.6).

RecBole's defaults: 2 layers, 2 heads, inner size 4 d, one GNN step, weight 0.6. RecBole's GC-SAN GNN has no
edge biases: they are zero here (`GNNCell.b_iah`, `b_ioh`). The session graph is built with batched torch ops on
the model's device (`common.session_graph`), not numpy.
"""

from torch import Tensor

from etude.models.common import (
    MAX_SESSION_LENGTH,
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

    def __init__(
        self,
        *,
        catalog_size: int,
        dim: int,
        layers: int = 2,
        heads: int = 2,
        inner: int = 0,
        eps: float = 1e-12,
        steps: int = 1,
        weight: float = 0.6,
        max_session_length: int = MAX_SESSION_LENGTH,
    ) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim, max_session_length=max_session_length)
        self.gnn = GNNCell(dim=dim, steps=steps)
        inner = inner if inner > 0 else 4 * dim
        self.encoder = TransformerEncoder(layers=layers, dim=dim, heads=heads_for(dim, heads), inner=inner, eps=eps)
        self.weight = weight

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        nodes, alias, a_in, a_out = session_graph(seq, lens)
        hidden = self.gnn(a_in, a_out, self.item_embedding(nodes))  # [B, N, d]
        seq_hidden = hidden.gather(1, alias.unsqueeze(2).expand(-1, -1, hidden.size(2)))  # [B, L, d]
        ht = gather_last(seq_hidden, lens)  # [B, d]
        at = gather_last(self.encoder(seq_hidden, attention_mask(seq, True)), lens)  # [B, d]
        return self.weight * at + (1 - self.weight) * ht
