"""GRU4Rec (Hidasi et al., ICLR 2016; RecBole's variant): a GRU over the session's item embeddings.

RecBole's defaults: embedding 64, hidden 128 (here hidden = 2 d), one layer, no GRU biases.
"""

from torch import Tensor, nn

from etude.models.common import MAX_SESSION_LENGTH, SessionModel, gather_last


class GRU4Rec(SessionModel):
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
        self.dense = nn.Linear(hidden, dim)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        emb = self.item_embedding(seq)  # [B, L, d]
        out, _ = self.gru(emb)  # [B, L, h]
        return gather_last(self.dense(out), lens)  # [B, d]
