"""SINE (Tan et al., WSDM 2021): sparse-interest network. The session activates its top prototypes (concepts),
items are assigned to interests, and the interest embeddings are aggregated by their affinity to the predicted
intention (RecBole's implementation; its defaults: 50 prototypes, 3 interests, tau 0.1, LayerNorm eps 1e-12).

As in RecBole: the activated prototypes are in ascending order of their score (slot k of the intention
assignment pairs with the k-th of them), sessions are padded to the maximum length with item 0, and the
softmaxes over positions span the padding (a trained padding row is not zero, so this is what makes the
ranking RecBole's).
"""

import torch
from torch import Tensor, nn

from etude.models.common import MAX_SESSION_LENGTH, SessionModel


class SINE(SessionModel):
    interests: int
    tau: float

    def __init__(
        self,
        *,
        catalog_size: int,
        dim: int,
        prototypes: int = 50,
        interests: int = 3,
        tau: float = 0.1,
        eps: float = 1e-12,
        max_session_length: int = MAX_SESSION_LENGTH,
    ) -> None:
        super().__init__(catalog_size=catalog_size, dim=dim, max_session_length=max_session_length)
        self.pad_to = max_session_length
        self.interests = interests
        self.tau = tau
        self.w1 = nn.Parameter(torch.zeros(dim, dim))
        self.w2 = nn.Parameter(torch.zeros(dim))
        self.w3 = nn.Parameter(torch.zeros(dim, dim))
        self.w4 = nn.Parameter(torch.zeros(dim))
        self.prototypes = nn.Embedding(prototypes, dim)
        self.w_k_1 = nn.Parameter(torch.zeros(interests, dim, dim))
        self.w_k_2 = nn.Parameter(torch.zeros(interests, dim))
        self.ln2 = nn.LayerNorm(dim, eps=eps)
        self.ln4 = nn.LayerNorm(dim, eps=eps)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        x_u = self.item_embedding(seq)  # [B, N, D], N = the maximum length
        B, D = x_u.size(0), x_u.size(2)
        K = self.interests
        # concept activation
        a = torch.matmul(torch.tanh(torch.matmul(x_u, self.w1)), self.w2)  # [B, N]
        z_u = torch.matmul(torch.softmax(a, dim=1).unsqueeze(1), x_u).squeeze(1)  # [B, D]
        s_u = torch.matmul(z_u, self.prototypes.weight.t())  # [B, P]
        s_top, idx = torch.topk(s_u, K, dim=1)  # [B, K] descending ...
        s_top, idx = s_top.flip(1), idx.flip(1)  # ... ascending, as RecBole's sort keeps them
        c_u = self.prototypes(idx) * torch.sigmoid(s_top).unsqueeze(2)  # [B, K, D]
        # attention weighting: items -> prototypes
        w3_x = nn.functional.normalize(torch.matmul(x_u, self.w3), p=2.0, dim=2)  # [B, N, D]
        p_k_t = torch.softmax(torch.bmm(w3_x, self.ln2(c_u).transpose(1, 2)), dim=2)  # [B, N, K]
        # intention assignment
        a_k = torch.matmul(x_u.unsqueeze(1), self.w_k_1.unsqueeze(0))  # [B, K, N, D]
        p_t_k = torch.softmax(torch.matmul(torch.tanh(a_k), self.w_k_2.view(1, K, D, 1)).squeeze(3), dim=2)  # [B, K, N]
        # interest embeddings
        mul_p = p_k_t.transpose(1, 2) * p_t_k  # [B, K, N]
        delta_k = nn.functional.normalize(torch.matmul(mul_p, x_u), p=2.0, dim=2)  # [B, K, D]
        # prototype sequence -> predicted intention
        x_bar = torch.matmul(p_k_t, c_u)  # [B, N, D]
        c_apt = torch.matmul(torch.tanh(torch.matmul(x_bar, self.w3)), self.w4)  # [B, N]
        c_apt = self.ln4(torch.matmul(torch.softmax(c_apt, dim=1).unsqueeze(1), x_bar))  # [B, 1, D]
        e_k = torch.bmm(delta_k, c_apt.view(B, D, 1)).squeeze(2) / self.tau  # [B, K]
        weights = torch.softmax(e_k, dim=1)
        return (weights.unsqueeze(2) * delta_k).sum(1)  # [B, D]
