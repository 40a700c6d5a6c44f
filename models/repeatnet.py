"""RepeatNet (Ren et al., AAAI 2019): a GRU encoder, a repeat/explore switch, a repeat decoder (attention over
the session's own items) and an explore decoder (a softmax over the catalog items not in the session).

As in RecBole (hidden size = embedding size): sessions are padded to the maximum length with item 0; the
repeat/explore switch attends over every position, padding included (the decoders mask it); the explore
decoder's attention layers have biases; and the explore softmax runs over all rows of its table except the
session's items, so the padding row 0 is part of its normaliser. A trained padding row is not zero, so these are
what make the ranking RecBole's.

RecBole multiplies the attention by a dense one-hot map [B, L, C] (and masks the explore scores with another),
so its cost grows as B * L * C. Here the repeat mass of each distinct session item is summed with
`scatter_add` ([B, L]), the explore decoder's session items are masked inside the blockwise top-k head, and its
softmax normaliser is a running logsumexp of the same pass. Nothing of size B x C is built: the final ranking
takes the top-k of (explore top-k) + (session items), which holds the true top-k because the score of every
item outside the session is monotone in its explore logit.
"""

import torch
from torch import Tensor, nn

from etude.models.common import (
    MAX_SESSION_LENGTH,
    SessionModel,
    gather_last,
    prepare_session,
    session_nodes,
    top_k_items,
)


def _attend(scores: Tensor, pad: Tensor) -> Tensor:
    """Attention scores [B, L, 1] -> weights [B, L] over the session's positions (padding excluded)."""
    return torch.softmax(scores.squeeze(2).masked_fill(pad, -1e9), dim=1)


class RepeatNet(SessionModel):
    def __init__(self, *, catalog_size: int, dim: int, max_session_length: int = MAX_SESSION_LENGTH) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim, max_session_length=max_session_length)
        self.pad_to = max_session_length
        self.gru = nn.GRU(dim, dim, batch_first=True)
        # repeat/explore mechanism
        self.re_w = nn.Linear(dim, dim, bias=False)
        self.re_u = nn.Linear(dim, dim, bias=False)
        self.re_v = nn.Linear(dim, 1, bias=False)
        self.re_c = nn.Linear(dim, 2, bias=False)
        # repeat decoder
        self.r_w = nn.Linear(dim, dim, bias=False)
        self.r_u = nn.Linear(dim, dim, bias=False)
        self.r_v = nn.Linear(dim, 1)
        # explore decoder
        self.e_w = nn.Linear(dim, dim)
        self.e_u = nn.Linear(dim, dim)
        self.e_v = nn.Linear(dim, 1)
        self.explore = nn.Linear(2 * dim, catalog_size + 1, bias=False)  # row i + 1 scores catalog item i

    def parts(self, seq: Tensor, lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(p [B, 2] repeat/explore probabilities, repeat attention [B, L], explore query [B, 2d])."""
        mem, _ = self.gru(self.item_embedding(seq))  # [B, L, d]
        last = gather_last(mem, lens)  # [B, d]
        pad = seq == 0
        a_re = torch.softmax(self.re_v(torch.tanh(self.re_u(mem) + self.re_w(last).unsqueeze(1))), dim=1)  # [B, L, 1]
        p = torch.softmax(self.re_c((a_re * mem).sum(1)), dim=-1)  # [B, 2]
        a_r = _attend(self.r_v(torch.tanh(self.r_w(last).unsqueeze(1) + self.r_u(mem))), pad)  # [B, L]
        a_e = _attend(self.e_v(torch.tanh(self.e_u(mem) + self.e_w(last).unsqueeze(1))), pad)
        query = torch.cat([(a_e.unsqueeze(2) * mem).sum(1), last], 1)  # [B, 2d]
        return p, a_r, query

    def forward(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        seq, lens = prepare_session(item_seq, item_seq_len, self.max_session_length, self.pad_to)  # [B, L]
        p, a_r, query = self.parts(seq, lens)
        items = seq - 1  # [B, L] catalog ids, -1 at padding
        # explore: logits of items outside the session, top-k and the softmax normaliser in one pass
        table = self.explore.weight  # [C + 1, 2d]
        ex_logit, ex_ids, lse = top_k_items(query, table, 1, self.catalog_size, k, None, items)
        lse = torch.logaddexp(lse, torch.mv(query.to(table.dtype), table[0]))  # the padding row's logit
        ex_prob = p[:, 1:2] * torch.exp(ex_logit - lse.unsqueeze(1))  # [B, k]
        ex_score = torch.where(torch.isinf(ex_logit), torch.full_like(ex_prob, -1.0), ex_prob)
        # repeat: attention mass of each distinct session item, summed with scatter_add
        nodes, alias = session_nodes(seq, lens)  # [B, L], [B, L]
        mass = torch.zeros_like(a_r).scatter_add(1, alias, a_r.masked_fill(seq == 0, 0.0))  # [B, L] per node
        rep_score = torch.where(nodes > 0, p[:, 0:1] * mass, torch.full_like(mass, -1.0))
        scores = torch.cat([ex_score, rep_score], 1)  # [B, k + L]
        ids = torch.cat([ex_ids, (nodes - 1).clamp(min=0)], 1)
        best = torch.topk(scores, k, dim=1).indices
        return ids.gather(1, best)  # [B, k]
