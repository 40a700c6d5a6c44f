"""Every built-in model: valid answers, eager == scripted == jit on varied sessions, batch independence."""

from __future__ import annotations

import pytest
import torch

from etude.models.export import to_torchscript
from etude.models.registry import MODELS, build_model
from etude.spec import BUILTIN_MODELS

C = 500
K = 21


def test_registry_lists_exactly_the_spec_models() -> None:
    assert sorted(MODELS) == sorted(BUILTIN_MODELS)


def varied_sessions(catalog_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch with lengths 1..60 (some over 50), repeats, immediate repeats and the id extremes."""
    g = torch.Generator().manual_seed(seed)
    rows = [
        [7],
        [catalog_size - 1, 0],
        [3, 3, 3, 3],
        [5, 9, 5, 9, 5, 9, 5],
        [1, 2, 3, 2, 1],
        torch.randint(0, catalog_size, (50,), generator=g).tolist(),
        torch.randint(0, catalog_size, (60,), generator=g).tolist(),
        torch.randint(0, 8, (33,), generator=g).tolist(),  # heavy repeats
        list(range(17)),
    ]
    L = max(len(r) for r in rows)
    seq = torch.zeros(len(rows), L, dtype=torch.long)
    for i, r in enumerate(rows):
        seq[i, : len(r)] = torch.tensor(r)
    seq[:, -1] = torch.where(seq[:, -1] == 0, torch.full_like(seq[:, -1], 4), seq[:, -1])  # junk in the padding
    lens = torch.tensor([len(r) for r in rows])
    return seq, lens


def spread(model: torch.nn.Module, factor: float = 10.0) -> torch.nn.Module:
    """Scale the random weights up (std 0.02 -> 0.2) so that scores are well separated, as trained ones are.

    With RecBole's tiny init, RepeatNet's explore probabilities all sit within ~1e-6 of 1/C, and round-off
    differences between batch shapes reorder near-ties; a user would not notice that, the test would.
    """
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    refresh = getattr(model, "refresh_norms", None)
    if refresh is not None:
        refresh()
    return model


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return spread(build_model(request.param, C, seed=3))


def assert_valid(ids: torch.Tensor, batch: int, k: int, catalog_size: int) -> None:
    assert ids.dtype == torch.long and tuple(ids.shape) == (batch, k)
    assert bool(((ids >= 0) & (ids < catalog_size)).all())
    for row in ids.tolist():
        assert len(set(row)) == k, f"repeated ids in {row}"


def test_answers_are_valid_distinct_ids(model: torch.nn.Module) -> None:
    seq, lens = varied_sessions(C)
    with torch.inference_mode():
        ids = model(seq, lens, K)
    assert_valid(ids, seq.size(0), K, C)
    assert model.catalog_size == C and model.max_session_length == 50


@pytest.mark.parametrize("runtime", ["eager", "jit"])
def test_scripted_agrees_with_python(model: torch.nn.Module, runtime: str) -> None:
    scripted = to_torchscript(model, runtime)
    for seed in range(3):
        seq, lens = varied_sessions(C, seed)
        with torch.inference_mode():
            assert torch.equal(scripted(seq, lens, K), model(seq, lens, K))
    assert scripted.catalog_size == C and scripted.max_session_length == 50


def test_answer_does_not_depend_on_the_batch(model: torch.nn.Module) -> None:
    """A session gets the same answer alone as in a padded batch (what the server's batching relies on)."""
    seq, lens = varied_sessions(C)
    with torch.inference_mode():
        batched = model(seq, lens, K)
        for i in range(seq.size(0)):
            alone = model(seq[i : i + 1, : lens[i]], lens[i : i + 1], K)
            assert torch.equal(alone[0], batched[i]), f"row {i}"


def test_long_sessions_keep_their_most_recent_items(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    session = torch.randint(0, C, (1, 60), generator=g)
    with torch.inference_mode():
        full = model(session, torch.tensor([60]), K)
        recent = model(session[:, 10:], torch.tensor([50]), K)
    assert torch.equal(full, recent)


@pytest.mark.parametrize("name", ["sasrec", "noop", "repeatnet"])
def test_k_outside_one_to_catalog_size_is_refused(name: str) -> None:
    scripted = to_torchscript(build_model(name, 30), "jit")
    seq, lens = torch.tensor([[1, 2]]), torch.tensor([2])
    assert_valid(scripted(seq, lens, 30), 1, 30, 30)
    for k in (0, 31):
        with pytest.raises(Exception, match="k must be in"):
            scripted(seq, lens, k)


def test_weights_come_from_the_seed() -> None:
    a, b, c = build_model("gru4rec", C, seed=1), build_model("gru4rec", C, seed=1), build_model("gru4rec", C, seed=2)
    assert torch.equal(a.get_parameter("item_embedding.weight"), b.get_parameter("item_embedding.weight"))
    assert not torch.equal(a.get_parameter("item_embedding.weight"), c.get_parameter("item_embedding.weight"))
    assert a.get_parameter("item_embedding.weight").shape == (C + 1, 5)  # d = ceil(500 ** 0.25)


def test_tiny_catalog() -> None:
    for name in sorted(MODELS):
        ids = to_torchscript(build_model(name, 1), "jit")(torch.tensor([[0, 0]]), torch.tensor([2]), 1)
        assert ids.tolist() == [[0]], name


@pytest.mark.parametrize("batch", [1, 16])
def test_a_batch_reads_the_item_table_once(batch: int) -> None:
    """The top-k head scores the whole batch per block: the blocks' rows add up to C, whatever B is."""
    catalog = 300_000  # several blocks of the head
    model = build_model("stamp", catalog)
    seq = torch.randint(0, catalog, (batch, 7))
    with torch.inference_mode(), torch.profiler.profile(record_shapes=True) as prof:
        model(seq, torch.full((batch,), 7), K)
    d = model.get_parameter("item_embedding.weight").size(1)
    scored_rows = []
    for e in prof.events():
        shapes = e.input_shapes
        # [n, d] x [d, B]; the model's own products over its padded [B * L, d] positions are not item blocks
        if e.name == "aten::mm" and len(shapes) == 2 and shapes[1] == [d, batch] and shapes[0][0] > batch * 50:
            scored_rows.append(shapes[0][0])
        if e.name == "aten::bmm" and len(shapes) == 2 and shapes[0] == [16, batch, d]:
            scored_rows.append(16 * shapes[1][2])  # [16, B, d] x [16, d, n / 16]
        if e.name == "aten::bmm" and len(shapes) == 2 and shapes[1] == [16, d, batch]:
            scored_rows.append(16 * shapes[0][1])  # [16, n / 16, d] x [16, d, B]
    assert sum(scored_rows) == catalog and len(scored_rows) > 1
