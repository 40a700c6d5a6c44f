"""RecBole 1.2.1 itself as the reference: its model classes built from its own default configs on a tiny data set.

The test extra installs RecBole with --no-deps plus what its model classes, Config and Trainer import (the
Makefile). RecBole's Config assigns numpy 1 aliases (`np.float_`, `np.complex_`, `np.unicode_`) that numpy 2
removed, and parses sys.argv: `recbole_config` lends it those aliases and an empty argv while it runs and then
restores numpy as it was. Its data preparation (pandas) is not used: the models only ask the data set for the
number of items and the sequence length, which `TinyDataset` answers.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from recbole.config import Config
from recbole.data.interaction import Interaction
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.trainer.trainer import Trainer
from recbole.utils import get_model

MAX_LEN = 50  # RecBole's MAX_ITEM_LIST_LENGTH default
SESSION_LENGTHS = (1, 2, 7, 49, 50, 60)
K = 21
RECBOLE_MODELS = ("GRU4Rec", "NARM", "STAMP", "SASRec", "SRGNN", "GCSAN", "CORE", "RepeatNet", "SINE", "LightSANs")
_NUMPY_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}
_NUMPY_TOUCHED = ("bool", "int", "float", "complex", "object", "str", "long", "unicode", *_NUMPY_ALIASES)


@contextlib.contextmanager
def _recbole_friendly_process() -> Iterator[None]:
    saved = {name: np.__dict__[name] for name in _NUMPY_TOUCHED if name in np.__dict__}
    argv = sys.argv
    for name, value in _NUMPY_ALIASES.items():
        if not hasattr(np, name):
            setattr(np, name, value)
    sys.argv = argv[:1]
    try:
        yield
    finally:
        sys.argv = argv
        for name in _NUMPY_TOUCHED:
            if name in saved:
                setattr(np, name, saved[name])
            elif name in np.__dict__:
                delattr(np, name)


def recbole_config(model: str, catalog_size: int) -> Config:
    """RecBole's own Config for `model`: its defaults, except the paper's embedding size d = ceil(C ** 0.25) and
    the sizes RecBole ties to it, kept at RecBole's ratios (inner 256 = 4 x 64, GRU hidden 128 = 2 x 64)."""
    d = math.ceil(catalog_size**0.25)
    overrides: dict[str, object] = {
        "use_gpu": False,
        "train_neg_sample_args": None,  # RecBole requires it with its default CE loss
        "embedding_size": d,
        "hidden_size": 2 * d if model in ("GRU4Rec", "NARM") else d,
        "inner_size": 4 * d,
        "MAX_ITEM_LIST_LENGTH": MAX_LEN,
    }
    with _recbole_friendly_process():
        return Config(model=model, dataset="tiny", config_dict=overrides)


class TinyDataset:
    """What RecBole's sequential models read from a data set: item count (padding row 0 included), sequence length."""

    def __init__(self, catalog_size: int) -> None:
        self.item_num = catalog_size + 1
        self.user_num = 8
        self.field2seqlen = {"item_id_list": MAX_LEN}

    def num(self, field: str) -> int:
        return self.item_num if field == "item_id" else self.user_num


def recbole_model(model: str, catalog_size: int, seed: int = 0) -> tuple[SequentialRecommender, Config]:
    """A RecBole model from its default config with random, well-separated weights (padding row 0 included)."""
    config = recbole_config(model, catalog_size)
    torch.manual_seed(seed)
    net = get_model(model)(config, TinyDataset(catalog_size))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net.eval(), config


def sessions(catalog_size: int, seed: int = 1) -> list[list[int]]:
    """One session (contract ids in [0, C)) per length in SESSION_LENGTHS, with repeats."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in SESSION_LENGTHS:
        s = torch.randint(0, catalog_size, (n,), generator=g).tolist()
        if n > 3:
            s[n // 2] = s[0]  # a repeat (RepeatNet's repeat decoder, the graph models' shared nodes)
        out.append(s)
    return out


def recbole_top_k(net: SequentialRecommender, session: list[int], k: int = K) -> list[int]:
    """RecBole's answer as contract ids: the session's last MAX_LEN items, shifted by +1 and padded with item 0
    to MAX_LEN as its data preparation does, `full_sort_predict`, padding column excluded as its evaluation does."""
    recent = [i + 1 for i in session[-MAX_LEN:]]
    seq = torch.zeros(1, MAX_LEN, dtype=torch.long)
    seq[0, : len(recent)] = torch.tensor(recent)
    inter = Interaction({"item_id_list": seq, "item_length": torch.tensor([len(recent)])})
    with torch.no_grad():
        scores = net.full_sort_predict(inter)
    scores[:, 0] = -math.inf
    top = torch.topk(scores[0], k)
    return [int(i) - 1 for i in top.indices]


def recbole_scores(net: SequentialRecommender, session: list[int]) -> torch.Tensor:
    """RecBole's full_sort_predict scores [C] of the session's items in contract id order (for tie checks)."""
    recent = [i + 1 for i in session[-MAX_LEN:]]
    seq = torch.zeros(1, MAX_LEN, dtype=torch.long)
    seq[0, : len(recent)] = torch.tensor(recent)
    inter = Interaction({"item_id_list": seq, "item_length": torch.tensor([len(recent)])})
    with torch.no_grad():
        return net.full_sort_predict(inter)[0, 1:]


def same_ranking(got: list[int], net: SequentialRecommender, session: list[int], k: int = K) -> bool:
    """got equals RecBole's top-k, ties aside: equal lists, or equal wherever RecBole's scores are not tied."""
    want = recbole_top_k(net, session, k)
    if got == want:
        return True
    scores = recbole_scores(net, session)
    s_got, s_want = scores[got], scores[want]
    return len(set(got)) == k and bool(torch.allclose(s_got, s_want, rtol=1e-5, atol=1e-7))


def save_like_trainer(net: SequentialRecommender, config: Config, path: Path) -> Path:
    """The checkpoint exactly as RecBole's Trainer writes it: its own `_save_checkpoint`, after one Adam step."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    sum(p.sum() for p in net.parameters()).backward()
    optimizer.step()
    optimizer.zero_grad()
    net.eval()
    trainer = SimpleNamespace(
        config=config, cur_step=1, best_valid_score=0.25, model=net, optimizer=optimizer, saved_model_file=str(path)
    )
    Trainer._save_checkpoint(trainer, 3, verbose=False)
    return path
