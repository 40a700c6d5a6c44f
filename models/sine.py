"""SINE (Tan et al., WSDM 2021): sparse-interest network. The session activates its top prototypes (concepts),
items are assigned to interests, and the interest embeddings are aggregated by their affinity to the predicted
intention (RecBole's implementation). Softmaxes over positions ignore padding, so a session's answer does not
depend on how much padding a batch adds.
"""

import torch
from torch import Tensor, nn

from models.common import SessionModel


class SINE(SessionModel):
    interests: int
    tau: float

    def __init__(
        self, *, catalog_size: int, dim: int, prototypes: int = 500, interests: int = 4, tau: float = 0.1
    ) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim)
        self.interests = interests
        self.tau = tau
        self.w1 = nn.Parameter(torch.zeros(dim, dim))
        self.w2 = nn.Parameter(torch.zeros(dim))
        self.w3 = nn.Parameter(torch.zeros(dim, dim))
        self.w4 = nn.Parameter(torch.zeros(dim))
        self.prototypes = nn.Embedding(prototypes, dim)
        self.w_k_1 = nn.Parameter(torch.zeros(interests, dim, dim))
        self.w_k_2 = nn.Parameter(torch.zeros(interests, dim))
        self.ln2 = nn.LayerNorm(dim)
        self.ln4 = nn.LayerNorm(dim)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        x_u = self.item_embedding(seq)  # [B, N, D]
        B, D = x_u.size(0), x_u.size(2)
        K = self.interests
        pad = seq == 0  # [B, N]
        # concept activation
        a = torch.matmul(torch.tanh(torch.matmul(x_u, self.w1)), self.w2).masked_fill(pad, -1e9)  # [B, N]
        z_u = torch.matmul(torch.softmax(a, dim=1).unsqueeze(1), x_u).squeeze(1)  # [B, D]
        s_u = torch.matmul(z_u, self.prototypes.weight.t())  # [B, P]
        s_top, idx = torch.topk(s_u, K, dim=1)  # [B, K]
        c_u = self.prototypes(idx) * torch.sigmoid(s_top).unsqueeze(2)  # [B, K, D]
        # attention weighting: items -> prototypes
        w3_x = nn.functional.normalize(torch.matmul(x_u, self.w3), p=2.0, dim=2)  # [B, N, D]
        p_k_t = torch.softmax(torch.bmm(w3_x, self.ln2(c_u).transpose(1, 2)), dim=2)  # [B, N, K]
        # intention assignment
        a_k = torch.matmul(x_u.unsqueeze(1), self.w_k_1.unsqueeze(0))  # [B, K, N, D]
        p_t_k = torch.matmul(torch.tanh(a_k), self.w_k_2.view(1, K, D, 1)).squeeze(3)  # [B, K, N]
        p_t_k = torch.softmax(p_t_k.masked_fill(pad.unsqueeze(1), -1e9), dim=2)
        # interest embeddings
        mul_p = p_k_t.transpose(1, 2) * p_t_k  # [B, K, N]
        delta_k = nn.functional.normalize(torch.matmul(mul_p, x_u), p=2.0, dim=2)  # [B, K, D]
        # prototype sequence -> predicted intention
        x_bar = torch.matmul(p_k_t, c_u)  # [B, N, D]
        c_apt = torch.matmul(torch.tanh(torch.matmul(x_bar, self.w3)), self.w4).masked_fill(pad, -1e9)  # [B, N]
        c_apt = self.ln4(torch.matmul(torch.softmax(c_apt, dim=1).unsqueeze(1), x_bar))  # [B, 1, D]
        e_k = torch.bmm(delta_k, c_apt.view(B, D, 1)).squeeze(2) / self.tau  # [B, K]
        weights = torch.softmax(e_k, dim=1)
        return (weights.unsqueeze(2) * delta_k).sum(1)  # [B, D]
