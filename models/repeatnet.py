"""RepeatNet (Ren et al., AAAI 2019): a GRU encoder, a repeat/explore switch, a repeat decoder (attention over
the session's own items) and an explore decoder (a softmax over the catalog items not in the session).

RecBole multiplies the attention by a dense one-hot map [B, L, C] (and masks the explore scores with another),
so its cost grows as B * L * C. Here the repeat mass of each distinct session item is summed with
`scatter_add` ([B, L]), the explore decoder's session items are masked inside the blockwise top-k head, and its
softmax normaliser is a running logsumexp of the same pass. Nothing of size B x C is built: the final ranking
takes the top-k of (explore top-k) + (session items), which holds the true top-k because the score of every
item outside the session is monotone in its explore logit.
"""

import torch
from torch import Tensor, nn

from models.common import SessionModel, gather_last, prepare_session, session_nodes, top_k_items


def _attend(scores: Tensor, pad: Tensor) -> Tensor:
    """Attention scores [B, L, 1] -> weights [B, L] over the session's positions (padding excluded)."""
    return torch.softmax(scores.squeeze(2).masked_fill(pad, -1e9), dim=1)


class RepeatNet(SessionModel):
    def __init__(self, *, catalog_size: int, dim: int) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim)
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
        self.e_w = nn.Linear(dim, dim, bias=False)
        self.e_u = nn.Linear(dim, dim, bias=False)
        self.e_v = nn.Linear(dim, 1)
        self.explore = nn.Linear(2 * dim, catalog_size, bias=False)  # row i scores catalog item i

    def parts(self, seq: Tensor, lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(p [B, 2] repeat/explore probabilities, repeat attention [B, L], explore query [B, 2d])."""
        mem, _ = self.gru(self.item_embedding(seq))  # [B, L, d]
        last = gather_last(mem, lens)  # [B, d]
        pad = seq == 0
        a_re = _attend(self.re_v(torch.tanh(self.re_u(mem) + self.re_w(last).unsqueeze(1))), pad)
        p = torch.softmax(self.re_c((a_re.unsqueeze(2) * mem).sum(1)), dim=-1)  # [B, 2]
        a_r = _attend(self.r_v(torch.tanh(self.r_w(last).unsqueeze(1) + self.r_u(mem))), pad)  # [B, L]
        a_e = _attend(self.e_v(torch.tanh(self.e_u(mem) + self.e_w(last).unsqueeze(1))), pad)
        query = torch.cat([(a_e.unsqueeze(2) * mem).sum(1), last], 1)  # [B, 2d]
        return p, a_r, query

    def forward(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        seq, lens = prepare_session(item_seq, item_seq_len, self.max_session_length, self.pad_to)  # [B, L]
        p, a_r, query = self.parts(seq, lens)
        items = seq - 1  # [B, L] catalog ids, -1 at padding
        # explore: logits of items outside the session, top-k and the softmax normaliser in one pass
        ex_logit, ex_ids, lse = top_k_items(query, self.explore.weight, 0, self.catalog_size, k, None, items)
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
