"""The built-in models compute RecBole 1.2.1's `full_sort_predict` ranking for the same weights.

For each of the ten models: RecBole's model from its default config (embedding size d = ceil(C ** 0.25)),
random weights (padding row 0 included), copied into the built-in model as `build_model` makes it (so the
built-in defaults are RecBole's); the top-21 agree, ties aside, for sessions of 1, 2, 7, 49, 50 and 60 items, in
Python and as the jit-scripted model.
"""

from __future__ import annotations

import pytest
import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole_reference import RECBOLE_MODELS, K, recbole_model, same_ranking, sessions

from etude.models.export import to_torchscript
from etude.models.recbole_import import SUPPORTED, rename_state_dict
from etude.models.registry import build_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

C = 1000  # d = 6


def builtin_with_recbole_weights(name: str, net: SequentialRecommender) -> torch.nn.Module:
    model = build_model(SUPPORTED[name][0], C)
    weights = rename_state_dict(name, net.state_dict())
    ours = model.state_dict()
    for key in set(ours) - set(weights):  # RecBole has no such weights: GC-SAN's edge biases, CORE's norm cache
        assert key in ("gnn.b_iah", "gnn.b_ioh", "inv_norm"), key
        weights[key] = torch.zeros_like(ours[key])
    model.load_state_dict(weights, strict=True)  # same names and shapes: the defaults are RecBole's
    refresh = getattr(model, "refresh_norms", None)
    if refresh is not None:
        refresh()
    return model.eval()


def answers(model: torch.nn.Module, rows: list[list[int]]) -> list[list[int]]:
    out = []
    with torch.inference_mode():
        for s in rows:
            out.append(model(torch.tensor([s]), torch.tensor([len(s)]), K)[0].tolist())
    return out


@pytest.mark.parametrize("name", RECBOLE_MODELS)
def test_builtin_model_ranks_as_recbole(name: str) -> None:
    net, _ = recbole_model(name, C)
    model = builtin_with_recbole_weights(name, net)
    rows = sessions(C)
    jit = to_torchscript(model, "jit")
    for s, eager_top, jit_top in zip(rows, answers(model, rows), answers(jit, rows), strict=True):
        assert same_ranking(eager_top, net, s), f"{name}, session of {len(s)}"
        assert same_ranking(jit_top, net, s), f"{name} (jit), session of {len(s)}"


def test_batched_sessions_rank_as_recbole() -> None:
    """The server pads a batch to its longest session; models that RecBole pads to 50 pad to 50 themselves."""
    rows = sessions(C)
    for name in ("STAMP", "LightSANs", "SINE", "RepeatNet", "SASRec"):
        net, _ = recbole_model(name, C, seed=2)
        model = builtin_with_recbole_weights(name, net)
        short = rows[:3]  # 1, 2 and 7 items: a batch padded to 7
        seq = torch.zeros(len(short), 7, dtype=torch.long)
        for i, s in enumerate(short):
            seq[i, : len(s)] = torch.tensor(s)
        with torch.inference_mode():
            top = model(seq, torch.tensor([len(s) for s in short]), K).tolist()
        for s, got in zip(short, top, strict=True):
            assert same_ranking(got, net, s), f"{name}, session of {len(s)} in a batch"
