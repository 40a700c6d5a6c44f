"""Pieces every model shares: session preparation, gathering the last position, the blockwise top-k head,
the transformer block and the batched session graph of SR-GNN / GC-SAN.

Ids: the serialized-model contract speaks catalog ids in [0, C). Inside the models an item's embedding row is
its id + 1 and row 0 is the padding row (all zeros), as in RecBole. `prepare_session` does that shift.

The top-k head (`top_k_items`) is where inference time goes: scoring all C items costs O(C d). It walks the
item table in blocks of rows, scores one block for the whole batch with one matrix product ([n, d] x [d, B]),
and merges the block into a running top-k per session. It never materialises B x C floats and reads the item
table once per batch, so a batch amortises the scan. A top-k over each B x n block would cost more than the
product itself, so after the first block only the items above a session's running k-th best score are merged,
found through the maxima of groups of 16 items (exact: no item below the threshold can enter the top-k). The
products run on torch's intra-op threads (`torch.set_num_threads`); a small batch's product is split into 16
batched products so that even one session uses every thread. docs/benchmarks.md has the measurements behind
these choices and behind keeping the table in fp32.
"""

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from etude.spec import embedding_dim as embedding_dim  # the paper's d = ceil(C ** 0.25), defined once there

MAX_SESSION_LENGTH = 50
# The head's block on a CPU: B * rows ~ 2^20 scores (4 MiB), rows within [4096, 2^18]; the threshold filter looks at
# groups of 16 items. (Literals inside the functions: TorchScript cannot read module globals.)


def heads_for(dim: int, wanted: int = 2) -> int:
    """The most attention heads <= wanted that divide dim (d = ceil(C^0.25) is odd for some C, e.g. 57)."""
    for h in range(wanted, 0, -1):
        if dim % h == 0:
            return h
    return 1


ItemRows = Callable[[int, Tensor], None]  # receives (first row, fp32 rows [n, d]) of an item table built in blocks
ITEM_INIT_ROWS = 1 << 16  # rows per block of a streamed item table: a multiple of 16 (see _stream_item_rows)
_ITEM_TABLE_DEFERRED = contextvars.ContextVar("item_table_deferred", default=False)


@contextlib.contextmanager
def item_table_deferred() -> Iterator[None]:
    """SessionModels built inside have their item table on the meta device (no memory): `init_weights` then hands
    its rows to an `ItemRows` sink block by block, so a quantized table is built without the fp32 one."""
    token = _ITEM_TABLE_DEFERRED.set(True)
    try:
        yield
    finally:
        _ITEM_TABLE_DEFERRED.reset(token)


def init_weights(module: nn.Module, seed: int, item_rows: ItemRows | None = None) -> None:
    """Random weights from a seed, RecBole style: normal(0, 0.02) for linear/embedding, zero biases and padding.

    A SessionModel's item table on the meta device (`item_table_deferred`) is drawn in blocks and given to
    `item_rows` instead of being stored; the numbers drawn are the same as for a stored table.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            last = name.rsplit(".", 1)[-1]
            if last.startswith(("bias", "b_")):
                p.zero_()
            elif p.is_meta:
                if item_rows is None or name != "item_embedding.weight":
                    raise ValueError(f"{name} is on the meta device and no sink receives its rows")
                _stream_item_rows(p.shape, gen, item_rows)
            else:
                p.normal_(0.0, 0.02, generator=gen)  # in place: no temporary copy of a 10M-item table
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
            if isinstance(m, nn.Embedding) and m.padding_idx is not None and not m.weight.is_meta:
                m.weight[m.padding_idx].zero_()


def _stream_item_rows(shape: torch.Size, gen: torch.Generator, item_rows: ItemRows) -> None:
    """normal(0, 0.02) rows of the item table, padding row 0 zeroed, in blocks of ITEM_INIT_ROWS rows.

    Drawing block by block gives the numbers one draw over the whole table gives: torch's CPU normal_ draws all
    uniforms in order and transforms them in groups of 16 (redrawing the last 16 of a ragged tail), so blocks
    whose sizes are multiples of 16 consume the generator exactly as the whole table does (tests/test_runtimes
    compares the two).
    """
    rows, dim = shape
    for start in range(0, rows, ITEM_INIT_ROWS):
        part = torch.empty(min(ITEM_INIT_ROWS, rows - start), dim).normal_(0.0, 0.02, generator=gen)
        if start == 0:
            part[0].zero_()  # the padding row
        item_rows(start, part)


def prepare_session(item_seq: Tensor, item_seq_len: Tensor, max_len: int, pad_to: int = 0) -> tuple[Tensor, Tensor]:
    """Contract input -> model input: keep each row's most recent `max_len` items, shift ids by +1 (0 = padding).

    item_seq [B, L] int64 catalog ids, right-padded; item_seq_len [B]. Returns (seq [B, L'], lens [B]) with
    L' = min(L, max_len) (or exactly `pad_to` when given), lens clamped to [1, L'].
    """
    B = item_seq.size(0)
    L = item_seq.size(1)
    n = min(L, max_len)
    width = pad_to if pad_to > 0 else n
    lens = torch.clamp(item_seq_len.to(torch.long), 1, min(n, L))  # [B]
    full = torch.clamp(item_seq_len.to(torch.long), 1, L)  # [B] valid items in the row
    pos = torch.arange(width, device=item_seq.device).unsqueeze(0)  # [1, W]
    src = torch.clamp(full.unsqueeze(1) - lens.unsqueeze(1) + pos, 0, L - 1)  # [B, W]
    seq = torch.gather(item_seq, 1, src) + 1
    seq = torch.where(pos < lens.unsqueeze(1), seq, torch.zeros_like(seq))  # [B, W]
    return seq.view(B, width), lens


def gather_last(output: Tensor, lens: Tensor) -> Tensor:
    """output [B, L, H] -> [B, H] at position lens - 1."""
    idx = (lens - 1).view(-1, 1, 1).expand(-1, 1, output.size(2))
    return output.gather(1, idx).squeeze(1)


def block_rows_for(batch: int, num_rows: int, on_gpu: bool = False) -> int:
    """Rows per block: ~2^20 scores per block on a CPU (cache-sized), ~2^26 on a GPU (few kernel launches).

    A multiple of 16 unless one block holds every row (the small-batch products and the group filter need it).
    """
    if on_gpu:
        rows = max(4096, (1 << 26) // max(batch, 1))
    else:
        rows = max(4096, min(1 << 18, (1 << 20) // max(batch, 1)))
    if rows >= num_rows:
        return num_rows
    return rows // 16 * 16


def _block_scores(q: Tensor, block: Tensor) -> Tensor:
    """Scores of the rows of block [n, d] for the batch q [B, d], item-major: [n, B].

    Item-major because MKL ran [n, d] x [d, B] faster than [B, d] x [d, n] for batches of 32 to 256 when this was
    written (`benchmarks/models_head.py --layouts` compares the two). A small batch's product runs on one thread;
    as 16 batched products it uses them all (which operand order is faster for one session depends on d). Every
    branch returns a contiguous [n, B] tensor.
    """
    B = q.size(0)
    n = block.size(0)
    d = block.size(1)
    if B < 8 and n % 16 == 0 and not q.is_cuda:
        parts = block.view(16, n // 16, d)  # [16, n/16, d]
        if B == 1 and d < 48:
            return torch.bmm(q.unsqueeze(0).expand(16, 1, d), parts.transpose(1, 2)).view(n, 1)
        return torch.bmm(parts, q.t().unsqueeze(0).expand(16, d, B)).view(n, B)
    return torch.mm(block, q.t())


def _merge(best_v: Tensor, best_i: Tensor, v: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
    """The running top-k [B, k] merged with candidates v, i [B, m]."""
    cand_v = torch.cat([best_v, v], 1)
    cand_i = torch.cat([best_i, i], 1)
    best_v, j = torch.topk(cand_v, best_v.size(1), dim=1)
    return best_v, cand_i.gather(1, j)


def _merge_above(scores: Tensor, start: int, best_v: Tensor, best_i: Tensor, group: int) -> tuple[Tensor, Tensor]:
    """Merge block scores [n, B] (items start..start+n-1) into the running top-k, exactly, without a top-k over B x n.

    Only an item scoring above its row's running k-th best can enter that row's top-k. The block's items are taken
    in groups of `group` consecutive rows; a group's maximum is compared with the threshold, and only the members of
    the groups above it (a few per row once the threshold has settled) go into the merge. A row whose threshold is
    still -inf (fewer than k scored items) takes every group.
    """
    n = scores.size(0)
    B = scores.size(1)
    k = best_v.size(1)
    thr = best_v[:, k - 1]  # [B]
    grouped = scores.view(n // group, group, B)
    hit = (grouped.amax(1) > thr) | torch.isneginf(thr)  # [n / group, B]
    found = torch.nonzero(hit.t())  # [N, 2]: (row, group), ordered by row
    if found.size(0) == 0:
        return best_v, best_i
    row = found[:, 0]
    grp = found[:, 1]
    rank = torch.arange(found.size(0), device=row.device) - torch.searchsorted(row, row)  # position within its row
    width = int(rank.max()) + 1
    dense_v = torch.full([B, width, group], -math.inf, dtype=scores.dtype, device=scores.device)
    dense_i = torch.zeros([B, width, group], dtype=torch.long, device=scores.device)
    dense_v[row, rank] = grouped[grp, :, row]  # [N, group] the members' scores
    dense_i[row, rank] = (grp * group + start).unsqueeze(1) + torch.arange(group, device=row.device)
    return _merge(best_v, best_i, dense_v.view(B, width * group), dense_i.view(B, width * group))


def top_k_items(
    query: Tensor,
    table: Tensor,
    first_row: int,
    num_items: int,
    k: int,
    item_scale: Tensor | None = None,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Blockwise maximum inner product search over rows [first_row, first_row + num_items) of `table`.

    query [B, d]; table [R, d]; item i (0-based) is row first_row + i. item_scale [R] multiplies row scores
    (CORE's cosine). exclude [B, L] item ids (negative = none) get score -inf, and then the logsumexp of all
    C scores is computed in the same pass (RepeatNet's explore softmax); otherwise it is returned as zeros.
    Returns (scores [B, k], ids [B, k] best first, logsumexp [B]). Raises for k outside [1, C].
    """
    if k < 1 or k > num_items:
        raise ValueError("k must be in [1, catalog_size]")
    B = query.size(0)
    rows = block_rows_for(B, num_items, query.is_cuda)
    group = 16
    q = query.to(table.dtype)
    best_v = torch.full([B, k], -math.inf, dtype=q.dtype, device=q.device)
    best_i = torch.zeros([B, k], dtype=torch.long, device=q.device)
    lse = torch.full([B], -math.inf, dtype=q.dtype, device=q.device)
    batch_col = torch.arange(B, device=q.device).unsqueeze(1)  # [B, 1]
    for start in range(0, num_items, rows):
        end = min(num_items, start + rows)
        n = end - start
        scores = _block_scores(q, table[first_row + start : first_row + end])  # [n, B], a fresh tensor
        if item_scale is not None:
            scores.mul_(item_scale[first_row + start : first_row + end].unsqueeze(1))
        if exclude is not None:
            local = exclude - start  # [B, L]
            hit = (local >= 0) & (local < n)
            flat = torch.where(hit, local * B + batch_col, torch.zeros_like(local))  # offsets into [n, B]
            penalty = torch.zeros(local.shape, dtype=scores.dtype, device=scores.device).masked_fill_(hit, -math.inf)
            scores.view(-1).scatter_add_(0, flat.view(-1), penalty.view(-1))
            lse = torch.logaddexp(lse, torch.logsumexp(scores, 0))
        if start == 0:  # the first block sets the thresholds
            v, i = torch.topk(scores.t(), min(k, n), dim=1)
            best_v, best_i = _merge(best_v, best_i, v, i + start)
            continue
        whole = n - n % group
        best_v, best_i = _merge_above(scores[:whole], start, best_v, best_i, group)
        if whole < n:  # the last few (< group) items of a ragged last block
            v, i = torch.topk(scores[whole:].t(), min(k, n - whole), dim=1)
            best_v, best_i = _merge(best_v, best_i, v, i + start + whole)
    if exclude is None:
        lse = torch.zeros_like(lse)
    return best_v, best_i, lse


def attention_mask(seq: Tensor, causal: bool = True) -> Tensor:
    """Additive mask [B, 1, L, L]: 0 where a query may attend to a key (key not padding; key <= query if causal)."""
    L = seq.size(1)
    keep = (seq > 0).unsqueeze(1).unsqueeze(2)  # [B, 1, 1, L]
    if causal:
        tri = torch.tril(torch.ones(L, L, dtype=torch.bool, device=seq.device))
        keep = keep & tri.unsqueeze(0).unsqueeze(0)
    zero = torch.zeros([1], dtype=torch.float32, device=seq.device)
    return torch.where(keep, zero, torch.full_like(zero, -10000.0))


class TransformerLayer(nn.Module):
    """RecBole's TransformerLayer: multi-head self-attention + position-wise feed-forward, post-LayerNorm, GELU."""

    def __init__(self, *, dim: int, heads: int, inner: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.dense = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ff_in = nn.Linear(dim, inner)
        self.ff_out = nn.Linear(inner, dim)
        self.ff_norm = nn.LayerNorm(dim, eps=eps)

    def _split(self, x: Tensor) -> Tensor:
        return x.view(x.size(0), x.size(1), self.heads, self.head_dim).transpose(1, 2)  # [B, h, L, hd]

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # x [B, L, d], mask [B, 1, L, L]
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask  # [B, h, L, L]
        ctx = torch.matmul(torch.softmax(att, dim=-1), v).transpose(1, 2).reshape(x.shape)  # [B, L, d]
        h = self.attn_norm(self.dense(ctx) + x)
        ff = self.ff_out(nn.functional.gelu(self.ff_in(h)))
        out: Tensor = self.ff_norm(ff + h)  # [B, L, d]
        return out


class TransformerEncoder(nn.Module):
    def __init__(self, *, layers: int, dim: int, heads: int, inner: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [TransformerLayer(dim=dim, heads=heads, inner=inner, eps=eps) for _ in range(layers)]
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


def session_nodes(seq: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct items of each session, batched with a sort (no numpy, no per-session loop).

    seq [B, L] shifted ids (0 = padding), lens [B]. Returns nodes [B, L] (the distinct items, ascending,
    0-padded) and alias [B, L] (the node index of each position; meaningless at padding positions).
    """
    B = seq.size(0)
    L = seq.size(1)
    valid = torch.arange(L, device=seq.device).unsqueeze(0) < lens.unsqueeze(1)  # [B, L]
    sentinel = 1 << 62  # above every id
    vals, order = torch.sort(torch.where(valid, seq, torch.full_like(seq, sentinel)), dim=1)  # [B, L]
    first = torch.ones_like(valid)
    first[:, 1:] = vals[:, 1:] != vals[:, :-1]
    first = first & (vals != sentinel)
    node_of_sorted = (torch.cumsum(first.to(torch.long), 1) - 1).clamp(min=0)  # [B, L]
    alias = torch.zeros_like(seq).scatter(1, order, node_of_sorted)  # [B, L]
    slot = torch.where(first, node_of_sorted, torch.full_like(node_of_sorted, L))  # dummy column L
    nodes = torch.zeros(B, L + 1, dtype=seq.dtype, device=seq.device)
    nodes = nodes.scatter(1, slot, torch.where(first, vals, torch.zeros_like(vals)))[:, :L]
    return nodes, alias


def session_graph(seq: Tensor, lens: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """SR-GNN's session graph, batched, with torch ops on seq's device (RecBole built it with numpy per session).

    Returns nodes [B, N], alias [B, L] (see `session_nodes`; N = L), and a_in, a_out [B, N, N]: the in- and
    out-degree-normalised adjacency of the click transitions i -> i+1 (a repeated transition counts once),
    RecBole's A[:, :, :N] and A[:, :, N:].
    """
    B = seq.size(0)
    L = seq.size(1)
    nodes, alias = session_nodes(seq, lens)
    pos = torch.arange(L, device=seq.device).unsqueeze(0)
    edge_ok = (pos[:, 1:] < lens.unsqueeze(1)).to(torch.float32)  # [B, L-1] click i -> i+1 exists
    flat = alias[:, :-1] * L + alias[:, 1:]
    adj = torch.zeros(B, L * L, dtype=torch.float32, device=seq.device)
    adj = adj.scatter_add(1, flat, edge_ok).clamp(max=1.0).view(B, L, L)  # adj[b, u, v] = 1: edge u -> v
    in_deg = adj.sum(1).clamp(min=1.0)  # [B, N]
    out_deg = adj.sum(2).clamp(min=1.0)
    a_in = (adj / in_deg.unsqueeze(1)).transpose(1, 2)
    a_out = adj / out_deg.unsqueeze(2)
    return nodes, alias, a_in, a_out


class GNNCell(nn.Module):
    """SR-GNN's gated graph neural network step (RecBole `GNN` with step = 1)."""

    def __init__(self, *, dim: int, steps: int = 1) -> None:
        super().__init__()
        self.steps = steps
        self.edge_in = nn.Linear(dim, dim)
        self.edge_out = nn.Linear(dim, dim)
        self.b_iah = nn.Parameter(torch.zeros(dim))
        self.b_ioh = nn.Parameter(torch.zeros(dim))
        self.w_ih = nn.Linear(2 * dim, 3 * dim)
        self.w_hh = nn.Linear(dim, 3 * dim)

    def forward(self, a_in: Tensor, a_out: Tensor, hidden: Tensor) -> Tensor:  # hidden [B, N, d]
        for _ in range(self.steps):
            inp_in = torch.matmul(a_in, self.edge_in(hidden)) + self.b_iah
            inp_out = torch.matmul(a_out, self.edge_out(hidden)) + self.b_ioh
            gi = self.w_ih(torch.cat([inp_in, inp_out], 2))
            gh = self.w_hh(hidden)
            i_r, i_i, i_n = gi.chunk(3, 2)
            h_r, h_i, h_n = gh.chunk(3, 2)
            reset = torch.sigmoid(i_r + h_r)
            update = torch.sigmoid(i_i + h_i)
            new = torch.tanh(i_n + reset * h_n)
            hidden = (1 - update) * hidden + update * new
        return hidden


class SessionModel(nn.Module):
    """Base of the models that score with their item embeddings: subclasses implement `encode`.

    Carries the contract's attributes `catalog_size` and `max_session_length` (TorchScript int attributes, kept
    through freezing) and the contract's `forward(item_seq, item_seq_len, k) -> ids [B, k]`.
    """

    catalog_size: int
    max_session_length: int
    pad_to: int

    def __init__(self, *, catalog_size: int, dim: int, max_session_length: int = MAX_SESSION_LENGTH) -> None:
        super().__init__()
        if catalog_size < 1:
            raise ValueError(f"catalog_size must be >= 1, got {catalog_size}")
        self.catalog_size = catalog_size
        self.max_session_length = max_session_length
        self.pad_to = 0  # > 0: always pad sessions to this length (models with fixed-size position attention)
        self.dim = dim
        device = "meta" if _ITEM_TABLE_DEFERRED.get() else None
        self.item_embedding = nn.Embedding(catalog_size + 1, dim, padding_idx=0, device=device)

    def encode(self, seq: Tensor, lens: Tensor) -> Tensor:
        """seq [B, L] shifted ids (0 = padding), lens [B] -> session representation [B, d]."""
        raise NotImplementedError

    def forward(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        seq, lens = prepare_session(item_seq, item_seq_len, self.max_session_length, self.pad_to)  # [B, L]
        query = self.encode(seq, lens)  # [B, d]
        _, ids, _ = top_k_items(query, self.item_embedding.weight, 1, self.catalog_size, k, None, None)
        return ids  # [B, k]
