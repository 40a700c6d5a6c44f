"""SASRec (Kang and McAuley, ICDM 2018): causal self-attention over item + position embeddings.

RecBole's defaults: 2 layers, 2 heads, inner size 4 d (256 at d = 64), LayerNorm eps 1e-12.
"""

from torch import Tensor, nn

from etude.models.common import (
    MAX_SESSION_LENGTH,
    SessionModel,
    TransformerEncoder,
    attention_mask,
    gather_last,
    heads_for,
)


class SASRec(SessionModel):
    def __init__(
        self,
        *,
        catalog_size: int,
        dim: int,
        layers: int = 2,
        heads: int = 2,
        inner: int = 0,
        eps: float = 1e-12,
        max_session_length: int = MAX_SESSION_LENGTH,
    ) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim, max_session_length=max_session_length)
        self.position_embedding = nn.Embedding(max_session_length, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        inner = inner if inner > 0 else 4 * dim
        self.encoder = TransformerEncoder(layers=layers, dim=dim, heads=heads_for(dim, heads), inner=inner, eps=eps)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        pos = self.position_embedding.weight[: seq.size(1)].unsqueeze(0)  # [1, L, d]
        x = self.norm(self.item_embedding(seq) + pos)  # [B, L, d]
        x = self.encoder(x, attention_mask(seq, True))
        return gather_last(x, lens)  # [B, d]
