"""LightSANs (Fan et al., SIGIR 2021): low-rank decomposed self-attention (items attend to k latent interests)
with decoupled position encoding (RecBole's implementation; its defaults: 2 layers, 2 heads, 5 interests,
inner size 4 d).

As in RecBole, sessions are padded to the maximum length with item 0 and nothing is masked: the item-to-interest
pooling and the position attention span the padding positions (a trained padding row is not zero, so this is
what makes the ranking RecBole's). The position attention is [L, L] for that fixed L, and there are no
data-dependent Python branches, so the model scripts and freezes.
"""

import math

import torch
from torch import Tensor, nn

from etude.models.common import MAX_SESSION_LENGTH, SessionModel, gather_last, heads_for


def _softmax_over_rows(logits: Tensor) -> Tensor:
    """softmax over dim -2, written as a softmax over the last dim of the transpose. Inductor (torch 2.13, so the
    `aot` runtime) rewrites `softmax(q @ k^T / s, dim=-2) @ v` into scaled_dot_product_attention, which normalises
    over the last dim: LightSANs then scored wrongly (10x attention weights); this form is not rewritten."""
    return torch.softmax(logits.transpose(-1, -2), dim=-1).transpose(-1, -2)


class ItemToInterest(nn.Module):
    """Aggregates the L item states into k interest states with learned attention over positions."""

    def __init__(self, *, dim: int, interests: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(dim, interests))

    def forward(self, x: Tensor) -> Tensor:  # x [B, L, d]
        weights = torch.softmax(torch.matmul(x, self.theta), dim=1)  # [B, L, k]
        return torch.matmul(weights.transpose(1, 2), x)  # [B, k, d]


class LightLayer(nn.Module):
    def __init__(self, *, dim: int, heads: int, interests: int, inner: int, eps: float) -> None:
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
        self.ff_in = nn.Linear(dim, inner)
        self.ff_out = nn.Linear(inner, dim)
        self.ff_norm = nn.LayerNorm(dim, eps=eps)

    def _split(self, x: Tensor) -> Tensor:
        return x.view(x.size(0), x.size(1), self.heads, self.head_dim).transpose(1, 2)  # [B, h, n, hd]

    def forward(self, x: Tensor, pos_emb: Tensor) -> Tensor:  # x [B, L, d], pos_emb [L, d]
        scale = math.sqrt(self.head_dim)
        q = self._split(self.query(x))  # [B, h, L, hd]
        mixed_value = self.value(x)
        k = self._split(self.pool_key(self.key(x)))  # [B, h, k, hd]
        v = self._split(self.pool_value(mixed_value))
        probs = _softmax_over_rows(torch.matmul(q, k.transpose(-1, -2)) / scale)  # [B, h, L, k]
        ctx_item = torch.matmul(probs, v)  # [B, h, L, hd]
        p = self.pos_norm(pos_emb).unsqueeze(0)  # [1, L, d]
        pq = self._split(self.pos_q(p)) * self.pos_scaling
        pk = self._split(self.pos_k(p))
        pos_bias = _softmax_over_rows(torch.matmul(pq, pk.transpose(-1, -2)) / scale)  # [1, h, L, L]
        ctx = (ctx_item + torch.matmul(pos_bias, self._split(mixed_value))).transpose(1, 2).reshape(x.shape)
        h = self.attn_norm(self.dense(ctx) + x)
        out: Tensor = self.ff_norm(self.ff_out(nn.functional.gelu(self.ff_in(h))) + h)  # [B, L, d]
        return out


class LightSANs(SessionModel):
    def __init__(
        self,
        *,
        catalog_size: int,
        dim: int,
        layers: int = 2,
        heads: int = 2,
        interests: int = 5,
        inner: int = 0,
        eps: float = 1e-12,
        max_session_length: int = MAX_SESSION_LENGTH,
    ) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim, max_session_length=max_session_length)
        self.pad_to = max_session_length
        self.position_embedding = nn.Embedding(max_session_length, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        h = heads_for(dim, heads)
        inner = inner if inner > 0 else 4 * dim
        self.layers = nn.ModuleList(
            [LightLayer(dim=dim, heads=h, interests=interests, inner=inner, eps=eps) for _ in range(layers)]
        )

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        x = self.norm(self.item_embedding(seq))  # [B, L, d]; positions enter through the decoupled attention
        pos = self.position_embedding.weight  # [L, d]
        for layer in self.layers:
            x = layer(x, pos)
        return gather_last(x, lens)  # [B, d]
