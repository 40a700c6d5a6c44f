"""The blockwise top-k head against a dense `topk` over all B x C scores, over several blocks of the head."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from etude.models.common import block_rows_for, top_k_items

Head = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
HEADS: dict[str, Head] = {"python": top_k_items, "scripted": torch.jit.script(top_k_items)}


def check_against_dense(got: tuple[torch.Tensor, torch.Tensor, torch.Tensor], dense: torch.Tensor, k: int) -> None:
    """Same top-k as a dense topk: the same scores, and every returned id carries its returned score.

    Ids are compared exactly unless two scores are within float round-off of each other (the head's products and
    the dense one sum in different orders), which a random table of this size does not produce.
    """
    values, ids, _ = got
    ref = torch.topk(dense, k, dim=1)
    assert torch.allclose(values, ref.values, rtol=1e-5, atol=1e-5)
    assert torch.allclose(dense.gather(1, ids), values, rtol=1e-5, atol=1e-5)
    gaps = (ref.values[:, :-1] - ref.values[:, 1:]).abs()
    if bool((gaps > 1e-4).all()):
        assert torch.equal(ids, ref.indices)


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize(
    ("catalog", "dim", "batch", "k"),
    [(300_000, 8, 1, 21), (600_007, 6, 3, 50), (100_003, 5, 40, 21), (40_000, 4, 300, 7)],
)
def test_head_matches_a_dense_topk(head: str, catalog: int, dim: int, batch: int, k: int) -> None:
    assert block_rows_for(batch, catalog) < catalog  # several blocks: the threshold filter is exercised
    g = torch.Generator().manual_seed(catalog)
    table = torch.randn(catalog + 1, dim, generator=g)
    query = torch.randn(batch, dim, generator=g)
    dense = query @ table[1:].t()
    check_against_dense(HEADS[head](query, table, 1, catalog, k, None, None), dense, k)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_scaled_and_excluded_items_and_the_logsumexp(head: str) -> None:
    catalog, dim, batch, k = 150_001, 6, 5, 21
    g = torch.Generator().manual_seed(0)
    table = torch.randn(catalog + 1, dim, generator=g)
    query = torch.randn(batch, dim, generator=g)
    scale = torch.rand(catalog + 1, generator=g)
    dense = (query @ table[1:].t()) * scale[1:]
    best = torch.topk(dense, 3, dim=1).indices  # exclude each row's best items: the answer must change
    exclude = torch.cat([best, torch.full((batch, 2), -1), torch.randint(0, catalog, (batch, 4), generator=g)], 1)
    for row, items in enumerate(exclude.tolist()):
        for item in items:
            if item >= 0:
                dense[row, item] = -math.inf
    got = HEADS[head](query, table, 1, catalog, k, scale, exclude)
    check_against_dense(got, dense, k)
    assert torch.allclose(got[2], torch.logsumexp(dense, 1), atol=1e-4)


def test_late_winners_and_a_k_larger_than_a_block() -> None:
    """Scores that rise along the table (every block beats the last) and k beyond the first block's rows."""
    catalog, batch = 9_000, 256
    rows = block_rows_for(batch, catalog)
    table = torch.linspace(0.0, 1.0, catalog + 1).unsqueeze(1).repeat(1, 2)
    query = torch.tensor([[1.0, 1.0]]).repeat(batch, 1)
    dense = query @ table[1:].t()
    for k in (21, rows + 100):
        check_against_dense(HEADS["scripted"](query, table, 1, catalog, k, None, None), dense, k)
    values, ids, _ = HEADS["scripted"](query, table, 1, catalog, 5, None, None)
    assert ids[0].tolist() == [catalog - 1 - i for i in range(5)]


def test_ties_keep_scores_and_distinct_ids() -> None:
    """A table of duplicated rows: ids may come in any order among equals, but scores and distinctness hold."""
    catalog, batch, k = 100_000, 4, 21
    g = torch.Generator().manual_seed(1)
    table = torch.randn(11, 3, generator=g)[torch.randint(0, 11, (catalog + 1,), generator=g)]
    query = torch.randn(batch, 3, generator=g)
    dense = query @ table[1:].t()
    values, ids, _ = top_k_items(query, table, 1, catalog, k, None, None)
    assert torch.allclose(values, torch.topk(dense, k, dim=1).values)
    assert torch.allclose(dense.gather(1, ids), values)
    assert all(len(set(row)) == k for row in ids.tolist())
