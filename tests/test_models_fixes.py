"""The defects the paper found in RecBole's SR-GNN, GC-SAN and RepeatNet, each tested for its fix."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from test_models import spread

from etude.models.common import prepare_session, session_graph
from etude.models.export import to_torchscript
from etude.models.gcsan import GCSAN
from etude.models.registry import build_model
from etude.models.repeatnet import RepeatNet
from etude.models.srgnn import SRGNN

C = 300
K = 10


def recbole_graph(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RecBole's SRGNN._get_slice: numpy, one session at a time (nodes include the padding id 0)."""
    n = seq.shape[1]
    items, a_in, a_out, alias = [], [], [], []
    for u_input in seq:
        node = np.unique(u_input)
        items.append(node.tolist() + (n - len(node)) * [0])
        u_a = np.zeros((n, n))
        for i in np.arange(len(u_input) - 1):
            if u_input[i + 1] == 0:
                break
            u, v = np.where(node == u_input[i])[0][0], np.where(node == u_input[i + 1])[0][0]
            u_a[u][v] = 1
        u_sum_in = np.sum(u_a, 0)
        u_sum_in[np.where(u_sum_in == 0)] = 1
        u_sum_out = np.sum(u_a, 1)
        u_sum_out[np.where(u_sum_out == 0)] = 1
        full = np.concatenate([np.divide(u_a, u_sum_in), np.divide(u_a.transpose(), u_sum_out)]).transpose()
        a_in.append(full[:, :n])
        a_out.append(full[:, n:])
        alias.append([np.where(node == i)[0][0] for i in u_input])
    return np.array(items), np.array(alias), np.array(a_in), np.array(a_out)


def numpy_graph(seq: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    nodes, alias, a_in, a_out = recbole_graph(seq.cpu().numpy())
    return (
        torch.as_tensor(nodes),
        torch.as_tensor(alias),
        torch.as_tensor(a_in, dtype=torch.float32),
        torch.as_tensor(a_out, dtype=torch.float32),
    )


def with_numpy_graph(model: torch.nn.Module) -> torch.nn.Module:
    """The same model (same weights) building its graph the RecBole way, with numpy inside forward."""
    import etude.models.gcsan
    import etude.models.srgnn

    class NumpyGraph(type(model)):  # type: ignore[misc]
        def encode(self, seq: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
            saved = etude.models.srgnn.session_graph, etude.models.gcsan.session_graph
            etude.models.srgnn.session_graph = etude.models.gcsan.session_graph = numpy_graph
            try:
                return super().encode(seq, lens)
            finally:
                etude.models.srgnn.session_graph, etude.models.gcsan.session_graph = saved

    clone = NumpyGraph(catalog_size=model.catalog_size, dim=model.dim)
    clone.load_state_dict(model.state_dict())
    return clone.eval().requires_grad_(False)


def batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(r) for r in rows)
    seq = torch.zeros(len(rows), L, dtype=torch.long)
    for i, r in enumerate(rows):
        seq[i, : len(r)] = torch.tensor(r)
    return seq, torch.tensor([len(r) for r in rows])


# Same shapes and lengths, different repeat structures: chains, cycles, self-loops, back-and-forth.
EXAMPLE_A = batch([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
EXAMPLE_B = batch([[1, 1, 1, 2, 2, 1], [7, 8, 7, 8], [11, 12, 13, 11, 12, 13]])
EXAMPLE_C = batch([[20, 21, 20, 22, 20, 23], [5, 5, 5, 5], [2, 9, 2, 9, 2, 1]])


def edge_weights(nodes, alias, a_in, a_out, n: int) -> dict[tuple[int, int], tuple[float, float]]:  # noqa: ANN001
    """(item u, item v) -> (in-weight, out-weight) over the session's first n positions, whatever the node order."""
    out = {}
    for i in range(n):
        for j in range(n):
            u, v = int(alias[i]), int(alias[j])
            out[(int(nodes[u]), int(nodes[v]))] = (float(a_in[u, v]), float(a_out[u, v]))
    return out


def test_batched_torch_graph_matches_recbole_numpy_graph() -> None:
    """Same adjacency as RecBole's, up to the order of the nodes (RecBole also keeps the padding node)."""
    for seq, lens in (EXAMPLE_A, EXAMPLE_B, EXAMPLE_C):
        shifted, lens = prepare_session(seq, lens, 50)
        nodes, alias, a_in, a_out = session_graph(shifted, lens)
        r_nodes, r_alias, r_in, r_out = recbole_graph(shifted.numpy())
        for b in range(seq.size(0)):
            n = int(lens[b])
            mine = edge_weights(nodes[b], alias[b], a_in[b], a_out[b], n)
            theirs = edge_weights(r_nodes[b], r_alias[b], r_in[b], r_out[b], n)
            assert mine.keys() == theirs.keys()
            for edge, weights in mine.items():
                assert weights == pytest.approx(theirs[edge]), edge


def agrees(candidate: torch.nn.Module, reference: torch.nn.Module, examples: list) -> bool:
    with torch.inference_mode():
        return all(torch.equal(candidate(seq, lens), reference(seq, lens)) for seq, lens in examples)


class FixedK(torch.nn.Module):
    """forward(seq, lens) with k fixed, so that torch.jit.trace can record the model."""

    def __init__(self, model: torch.nn.Module, k: int = K) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, seq: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        return self.model(seq, lens, self.k)


@pytest.mark.parametrize("cls", [SRGNN, GCSAN])
def test_scripted_graph_models_agree_with_eager_on_every_repeat_structure(cls: type) -> None:
    model = spread(build_model(cls.__name__.lower(), C, seed=5))
    eager = FixedK(model)
    examples = [EXAMPLE_A, EXAMPLE_B, EXAMPLE_C]
    for runtime in ("eager", "jit"):
        assert agrees(FixedK(to_torchscript(model, runtime)), eager, examples)
    # the RecBole-style numpy graph gives the same answers in eager mode ...
    numpy_model = FixedK(with_numpy_graph(model))
    assert agrees(numpy_model, eager, examples)
    # ... but traced on one example it has that example's graph frozen in, and the same check catches it
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(numpy_model, EXAMPLE_A, check_trace=False)
    assert agrees(traced, eager, [EXAMPLE_A])
    assert not agrees(traced, eager, [EXAMPLE_B, EXAMPLE_C])


def test_graph_is_built_on_the_model_device_without_numpy() -> None:
    """The scripted model's graph holds no numpy call and no host transfer: it is plain torch ops."""
    graph = str(to_torchscript(build_model("srgnn", C), "jit").graph)
    assert "numpy" not in graph and "aten::cpu" not in graph and "prim::PythonOp" not in graph


def dense_repeatnet(model: RepeatNet, seq: torch.Tensor, lens: torch.Tensor, k: int) -> torch.Tensor:
    """RecBole's formulation: dense one-hot [B, L, C] maps for the repeat decoder and the explore mask."""
    shifted, lens = prepare_session(seq, lens, 50)
    p, a_r, query = model.parts(shifted, lens)
    items = (shifted - 1).clamp(min=0)
    one_hot = torch.nn.functional.one_hot(items, model.catalog_size).float() * (shifted > 0).unsqueeze(2)
    repeat = torch.bmm(a_r.unsqueeze(1), one_hot).squeeze(1)  # [B, C]
    logits = query @ model.explore.weight.t()  # [B, C + 1]: row 0 (padding) is part of the softmax, as in RecBole
    in_session = torch.cat([torch.zeros_like(one_hot[:, 0, :1]), one_hot.sum(1)], 1) > 0
    explore = torch.softmax(logits.masked_fill(in_session, float("-inf")), dim=1)[:, 1:]
    prediction = p[:, 0:1] * repeat + p[:, 1:2] * explore
    return torch.topk(prediction, k, dim=1).indices


def test_repeatnet_matches_the_dense_reference() -> None:
    model = spread(build_model("repeatnet", C, seed=2))
    scripted = to_torchscript(model, "jit")
    g = torch.Generator().manual_seed(0)
    rows = [
        [4],
        [4, 4, 4],
        [1, 2, 1, 2, 3],
        torch.randint(0, C, (40,), generator=g).tolist(),
        torch.randint(0, 6, (55,), generator=g).tolist(),
    ]
    seq, lens = batch(rows)
    with torch.inference_mode():
        expected = dense_repeatnet(cast(RepeatNet, model), seq, lens, K)
        assert torch.equal(model(seq, lens, K), expected)
        assert torch.equal(scripted(seq, lens, K), expected)


def test_repeatnet_builds_nothing_of_size_batch_times_catalog() -> None:
    """No [B, L, C] one-hot, and not even a [B, C] score matrix: cost does not grow as B * L * C."""
    catalog, batch_size, length = 200_000, 16, 30  # C above one block of the head
    model = build_model("repeatnet", catalog)
    seq = torch.randint(0, catalog, (batch_size, length))
    lens = torch.full((batch_size,), length)
    tables = {model.get_parameter("item_embedding.weight").numel(), model.get_parameter("explore.weight").numel()}
    with torch.inference_mode(), torch.profiler.profile(record_shapes=True) as prof:
        model(seq, lens, K)
    sizes = [int(np.prod(s)) for e in prof.events() for s in e.input_shapes if s]
    biggest = max(n for n in sizes if n not in tables)
    assert biggest < batch_size * catalog


def test_lightsans_freezes_and_optimises() -> None:
    """The paper could not JIT-optimise LightSANs (dynamic code paths); here its jit artifact is fully frozen."""
    model = spread(build_model("lightsans", C, seed=4))
    jit = to_torchscript(model, "jit")
    attrs = {line.split('name="')[1].split('"')[0] for line in str(jit.graph).splitlines() if "prim::GetAttr" in line}
    assert attrs == {"catalog_size", "max_session_length"}  # every weight folded into the graph: frozen
    for rows in ([[3]], [[1, 2, 3, 2, 1]], [list(range(60))]):
        seq, lens = batch(rows)
        with torch.inference_mode():
            assert torch.equal(jit(seq, lens, K), model(seq, lens, K))
