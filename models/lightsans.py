"""LightSANs (Fan et al., SIGIR 2021): low-rank decomposed self-attention (items attend to k latent interests)
with decoupled position encoding (RecBole's implementation).

Made scriptable: sessions are always padded to the fixed maximum length inside the model (the position
attention is [L, L] for that fixed L), there are no data-dependent Python branches, and the interest
aggregation ignores padding positions.
"""

import math

import torch
from torch import Tensor, nn

from models.common import MAX_SESSION_LENGTH, SessionModel, gather_last, heads_for


class ItemToInterest(nn.Module):
    """Aggregates the L item states into k interest states with learned attention over positions."""

    def __init__(self, *, dim: int, interests: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(dim, interests))

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:  # x [B, L, d], pad [B, L]
        weights = torch.matmul(x, self.theta).masked_fill(pad.unsqueeze(2), -1e9)  # [B, L, k]
        return torch.matmul(torch.softmax(weights, dim=1).transpose(1, 2), x)  # [B, k, d]


class LightLayer(nn.Module):
    def __init__(self, *, dim: int, heads: int, interests: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.pool_key = ItemToInterest(dim=dim, interests=interests)
        self.pool_value = ItemToInterest(dim=dim, interests=interests)
        self.pos_q = nn.Linear(dim, dim)
        self.pos_k = nn.Linear(dim, dim)
        self.pos_scaling = float(self.head_dim * 2) ** -0.5
        self.pos_norm = nn.LayerNorm(dim, eps=eps)
        self.dense = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ff_in = nn.Linear(dim, 4 * dim)
        self.ff_out = nn.Linear(4 * dim, dim)
        self.ff_norm = nn.LayerNorm(dim, eps=eps)

    def _split(self, x: Tensor) -> Tensor:
        return x.view(x.size(0), x.size(1), self.heads, self.head_dim).transpose(1, 2)  # [B, h, n, hd]

    def forward(self, x: Tensor, pos_emb: Tensor, pad: Tensor) -> Tensor:  # x [B, L, d], pos_emb [L, d]
        scale = math.sqrt(self.head_dim)
        q = self._split(self.query(x))  # [B, h, L, hd]
        mixed_value = self.value(x)
        k = self._split(self.pool_key(self.key(x), pad))  # [B, h, k, hd]
        v = self._split(self.pool_value(mixed_value, pad))
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / scale, dim=-2)  # [B, h, L, k]
        ctx_item = torch.matmul(probs, v)  # [B, h, L, hd]
        v_pos = self._split(mixed_value.masked_fill(pad.unsqueeze(2), 0.0))  # padding contributes nothing
        p = self.pos_norm(pos_emb).unsqueeze(0)  # [1, L, d]
        pq = self._split(self.pos_q(p)) * self.pos_scaling
        pk = self._split(self.pos_k(p))
        pos_bias = torch.softmax(torch.matmul(pq, pk.transpose(-1, -2)) / scale, dim=-2)  # [1, h, L, L]
        ctx = (ctx_item + torch.matmul(pos_bias, v_pos)).transpose(1, 2).reshape(x.shape)  # [B, L, d]
        h = self.attn_norm(self.dense(ctx) + x)
        out: Tensor = self.ff_norm(self.ff_out(nn.functional.gelu(self.ff_in(h))) + h)  # [B, L, d]
        return out


class LightSANs(SessionModel):
    def __init__(self, *, catalog_size: int, dim: int, layers: int = 2, heads: int = 2, interests: int = 15) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim)
        self.pad_to = MAX_SESSION_LENGTH
        self.position_embedding = nn.Embedding(MAX_SESSION_LENGTH, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        h = heads_for(dim, heads)
        self.layers = nn.ModuleList([LightLayer(dim=dim, heads=h, interests=interests) for _ in range(layers)])

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        x = self.norm(self.item_embedding(seq))  # [B, L, d]; positions enter through the decoupled attention
        pad = seq == 0
        pos = self.position_embedding.weight  # [L, d]
        for layer in self.layers:
            x = layer(x, pos, pad)
        return gather_last(x, lens)  # [B, d]
