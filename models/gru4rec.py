"""GRU4Rec (Hidasi et al., ICLR 2016; RecBole's variant): a GRU over the session's item embeddings."""

from torch import Tensor, nn

from models.common import SessionModel, gather_last


class GRU4Rec(SessionModel):
    def __init__(self, *, catalog_size: int, dim: int, layers: int = 1) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim)
        self.gru = nn.GRU(dim, dim, num_layers=layers, bias=False, batch_first=True)
        self.dense = nn.Linear(dim, dim)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        emb = self.item_embedding(seq)  # [B, L, d]
        out, _ = self.gru(emb)  # [B, L, d]
        return gather_last(self.dense(out), lens)  # [B, d]
