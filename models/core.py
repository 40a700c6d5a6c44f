"""CORE (Hou et al., SIGIR 2022): a transformer weighs the session's item embeddings; the session
representation lives in the item embedding space and is scored by cosine similarity (RecBole's `trm` encoder;
its defaults: 2 layers, 2 heads, inner size 4 d).

The item norms are computed once at construction (`inv_norm`), so scoring is one pass over the raw item table
times a per-item scale instead of normalising all C embeddings per request. The temperature only scales the
scores and does not change the ranking, so it is left out of inference.
"""

import torch
from torch import Tensor, nn

from etude.models.common import MAX_SESSION_LENGTH, attention_mask, prepare_session, top_k_items
from etude.models.sasrec import SASRec


class CORE(SASRec):
    """SASRec's embeddings, LayerNorm and transformer (RecBole's `trm` encoder), then attention pooling."""

    inv_norm: Tensor  # [C + 1] buffer: 1 / the norm of each item embedding

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
        super().__init__(catalog_size=catalog_size, dim=dim, layers=layers, heads=heads, inner=inner, eps=eps,
                         max_session_length=max_session_length)
        self.fn = nn.Linear(dim, 1)
        self.register_buffer("inv_norm", torch.ones(catalog_size + 1))

    def refresh_norms(self) -> None:
        """Recompute the item norms; call after loading or changing the item embeddings."""
        self.set_norms(self.item_embedding.weight.norm(dim=1))

    def set_norms(self, norms: Tensor) -> None:
        """The item norms [C + 1] from elsewhere (a table that was built in blocks and not kept)."""
        with torch.no_grad():
            self.inv_norm.copy_(1.0 / norms.clamp(min=1e-12))

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        emb = self.item_embedding(seq)  # [B, L, d]
        pos = self.position_embedding.weight[: seq.size(1)].unsqueeze(0)
        x = self.encoder(self.norm(emb + pos), attention_mask(seq, True))  # [B, L, d]
        alpha = self.fn(x)  # [B, L, 1]
        alpha = torch.where((seq > 0).unsqueeze(2), alpha, torch.full_like(alpha, -9e15))
        alpha = torch.softmax(alpha, dim=1)
        out = (alpha * emb).sum(1)  # [B, d]
        return nn.functional.normalize(out, dim=-1)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        seq, lens = prepare_session(item_seq, item_seq_len, self.max_session_length, self.pad_to)
        query = self.encode(seq, lens)  # [B, d]
        _, ids, _ = top_k_items(query, self.item_embedding.weight, 1, self.catalog_size, k, self.inv_norm, None)
        return ids
