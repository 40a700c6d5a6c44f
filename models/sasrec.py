"""SASRec (Kang and McAuley, ICDM 2018): causal self-attention over item + position embeddings."""

from torch import Tensor, nn

from models.common import MAX_SESSION_LENGTH, SessionModel, TransformerEncoder, attention_mask, gather_last, heads_for


class SASRec(SessionModel):
    def __init__(self, *, catalog_size: int, dim: int, layers: int = 2, heads: int = 2) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim)
        self.position_embedding = nn.Embedding(MAX_SESSION_LENGTH, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.encoder = TransformerEncoder(layers=layers, dim=dim, heads=heads_for(dim, heads), inner=4 * dim)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        pos = self.position_embedding.weight[: seq.size(1)].unsqueeze(0)  # [1, L, d]
        x = self.norm(self.item_embedding(seq) + pos)  # [B, L, d]
        x = self.encoder(x, attention_mask(seq, True))
        return gather_last(x, lens)  # [B, d]
