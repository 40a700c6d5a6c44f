"""Built-in model names -> constructors. The names must be exactly etude.spec.BUILTIN_MODELS (a test checks it).

`build_model(name, catalog_size, seed)` gives a model in eval mode, no gradients, with weights drawn from
the seed and embedding size d = ceil(C ** 0.25).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from torch import nn

from etude.errors import UsageError
from etude.models.common import ItemRows, embedding_dim, init_weights, item_table_deferred
from etude.models.core import CORE
from etude.models.gcsan import GCSAN
from etude.models.gru4rec import GRU4Rec
from etude.models.lightsans import LightSANs
from etude.models.narm import NARM
from etude.models.noop import Noop
from etude.models.repeatnet import RepeatNet
from etude.models.sasrec import SASRec
from etude.models.sine import SINE
from etude.models.srgnn import SRGNN
from etude.models.stamp import STAMP

MODELS: dict[str, Callable[..., nn.Module]] = {
    "core": CORE,
    "gcsan": GCSAN,
    "gru4rec": GRU4Rec,
    "lightsans": LightSANs,
    "narm": NARM,
    "noop": Noop,
    "repeatnet": RepeatNet,
    "sasrec": SASRec,
    "sine": SINE,
    "srgnn": SRGNN,
    "stamp": STAMP,
}


def check_name(name: str) -> str:
    key = name.lower()
    if key not in MODELS:
        raise UsageError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return key


def build_model(name: str, catalog_size: int, seed: int = 42, item_rows: ItemRows | None = None) -> nn.Module:
    """A built-in model with seeded random weights, ready for inference (eval, no grad).

    With `item_rows`, a session model's item table is not stored: it stays on the meta device and its rows go to
    `item_rows` block by block (the same numbers); derived buffers (CORE's norms) are then the caller's to set.
    """
    key = check_name(name)
    if catalog_size < 1:
        raise UsageError(f"catalog size must be >= 1, got {catalog_size}")
    with item_table_deferred() if item_rows is not None else contextlib.nullcontext():
        model = MODELS[key](catalog_size=catalog_size, dim=embedding_dim(catalog_size))
    init_weights(model, seed, item_rows)
    refresh = getattr(model, "refresh_norms", None)
    if refresh is not None and item_rows is None:
        refresh()
    return model.eval().requires_grad_(False)
