"""`etude import-recbole`: a RecBole 1.2.1 checkpoint (the `.pth` file its Trainer saves) -> a serialized model.

A RecBole checkpoint is `torch.save` of a dict: `config` (a pickled `recbole.config.configurator.Config`),
`state_dict`, `other_parameter`, `optimizer`, `epoch`, `cur_step`, `best_valid_score`. Reading it needs no
RecBole: a restricted unpickler resolves only what that format holds. torch's tensor rebuild functions and
`collections.OrderedDict` are themselves; RecBole's `Config` becomes a plain object holding its attributes, its
enums (`ModelType`, `InputType`, `EvaluatorType`, ...) plain values, and the model class, `torch.device` and
`yaml.loader.FullLoader` inert names. Any other global (say `os.system`) is refused with a one-line error, so
nothing in the file runs code. Tensors are mapped to the CPU (a checkpoint saved on a GPU holds cuda tensors).

The model class and its hyperparameters come from the config's `final_config_dict`; the catalog size is the
rows of the item embedding (`item_matrix` for RepeatNet) minus RecBole's padding row 0 (RecBole's internal id
j is contract id j - 1). The weights are renamed to the built-in model's and loaded strictly, so the built-in
model computes RecBole's `full_sort_predict` ranking (docs/design.md, "Models and RecBole").
"""

from __future__ import annotations

import collections
import io
import logging
import pickle
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from etude import storage
from etude.errors import UsageError

log = logging.getLogger(__name__)

# RecBole model name -> (built-in name, the state_dict key of its item table)
SUPPORTED = {
    "GRU4Rec": ("gru4rec", "item_embedding.weight"),
    "NARM": ("narm", "item_embedding.weight"),
    "STAMP": ("stamp", "item_embedding.weight"),
    "SASRec": ("sasrec", "item_embedding.weight"),
    "SRGNN": ("srgnn", "item_embedding.weight"),
    "GCSAN": ("gcsan", "item_embedding.weight"),
    "CORE": ("core", "item_embedding.weight"),
    "RepeatNet": ("repeatnet", "item_matrix.weight"),
    "SINE": ("sine", "item_embedding.weight"),
    "LightSANs": ("lightsans", "item_embedding.weight"),
}


# ---- reading the pickle ---------------------------------------------------------------------------------------


class RecBoleObject:
    """A pickled RecBole object (its `Config`) as plain data: the class name and the attributes it had."""

    recbole_class = ""

    def __setstate__(self, state: object) -> None:
        self.__dict__["state"] = state if isinstance(state, dict) else {}


@dataclass(frozen=True)
class Inert:
    """A class or value the format names but that is never used here (the model class, a device, a yaml loader)."""

    name: str
    args: tuple[object, ...] = ()


def _inert(name: str) -> Callable[..., Inert]:
    def make(*args: object) -> Inert:
        return Inert(name, tuple(args))

    return make


def _recbole_class(name: str) -> type[RecBoleObject]:
    return type(name.rsplit(".", 1)[-1], (RecBoleObject,), {"recbole_class": name})


_TORCH_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
}
_TORCH_DTYPES = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
_RECBOLE_ENUMS = re.compile(r"recbole\.utils\.enum_type$")
_RECBOLE_MODEL = re.compile(r"recbole\.model(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a RecBole checkpoint holds; anything else is a UsageError naming it."""

    def find_class(self, module: str, name: str) -> Any:
        import torch

        if (module, name) in _TORCH_GLOBALS:
            return getattr(torch._utils, name)
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        if module == "torch" and name == "Size":
            return torch.Size
        if module == "torch" and name == "device":
            return _inert("torch.device")
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "recbole.config.configurator" and name == "Config":
            return _recbole_class(f"{module}.{name}")
        if _RECBOLE_ENUMS.match(module):
            return _inert(f"{module}.{name}")
        if _RECBOLE_MODEL.match(module) or module == "yaml.loader":
            return Inert(f"{module}.{name}")
        raise UsageError(f"refusing to unpickle {module}.{name}: a RecBole checkpoint does not hold it")


class _RestrictedPickle:
    """The `pickle_module` torch.load reads the file with: our Unpickler, and a `load` that uses it."""

    Unpickler = RestrictedUnpickler

    @staticmethod
    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()


@dataclass(frozen=True)
class Checkpoint:
    """What the import needs from a RecBole checkpoint."""

    recbole_model: str
    config: dict[str, object]
    state_dict: dict[str, Any]  # name -> CPU tensor


def read_checkpoint(data: bytes, source: str) -> Checkpoint:
    """Parse a checkpoint's bytes (never running code from them); UsageError naming `source` and what is wrong."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)
    except UsageError as err:
        raise UsageError(f"{source}: {err}") from None
    except Exception as err:  # noqa: BLE001 - any parse failure means "not a RecBole checkpoint"
        raise UsageError(f"{source} is not a RecBole checkpoint ({_first_line(err)})") from None
    if not isinstance(raw, dict) or "config" not in raw or "state_dict" not in raw:
        keys = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise UsageError(
            f"{source} is not a RecBole checkpoint: expected a dict with 'config' and 'state_dict' "
            f"as RecBole's Trainer saves it, got {keys}"
        )
    config = raw["config"]
    state = config.__dict__.get("state", {}) if isinstance(config, RecBoleObject) else {}
    final = state.get("final_config_dict") if isinstance(state, dict) else None
    if not isinstance(final, dict) or not isinstance(final.get("model"), str):
        raise UsageError(f"{source}: its 'config' is not a RecBole Config with a final_config_dict naming the model")
    weights = raw["state_dict"]
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise UsageError(f"{source}: its 'state_dict' is not a mapping of names to tensors")
    return Checkpoint(final["model"], dict(final), dict(weights))


# ---- building the built-in model -------------------------------------------------------------------------------

_TRANSFORMER_KEYS = [
    (r"multi_head_attention\.LayerNorm\.", "attn_norm."),
    (r"multi_head_attention\.", ""),
    (r"feed_forward\.dense_1\.", "ff_in."),
    (r"feed_forward\.dense_2\.", "ff_out."),
    (r"feed_forward\.LayerNorm\.", "ff_norm."),
]
_GNN_KEYS = [
    (r"^gnn\.w_ih$", "gnn.w_ih.weight"),
    (r"^gnn\.b_ih$", "gnn.w_ih.bias"),
    (r"^gnn\.w_hh$", "gnn.w_hh.weight"),
    (r"^gnn\.b_hh$", "gnn.w_hh.bias"),
    (r"^gnn\.linear_edge_in\.", "gnn.edge_in."),
    (r"^gnn\.linear_edge_out\.", "gnn.edge_out."),
]
# RecBole state_dict key -> built-in key, per model: (pattern, replacement) applied in order
RENAMES: dict[str, list[tuple[str, str]]] = {
    "GRU4Rec": [(r"^gru_layers\.", "gru.")],
    "NARM": [],
    "STAMP": [],
    "SASRec": [(r"^trm_encoder\.layer\.", "encoder.layers."), (r"^LayerNorm\.", "norm."), *_TRANSFORMER_KEYS],
    "SRGNN": _GNN_KEYS,
    "GCSAN": [*_GNN_KEYS, (r"^self_attention\.layer\.", "encoder.layers."), *_TRANSFORMER_KEYS],
    "CORE": [
        (r"^net\.trm_encoder\.layer\.", "encoder.layers."),
        (r"^net\.LayerNorm\.", "norm."),
        (r"^net\.", ""),
        *_TRANSFORMER_KEYS,
    ],
    "RepeatNet": [
        (r"^item_matrix\.", "item_embedding."),
        (r"^repeat_explore_mechanism\.Wre\.", "re_w."),
        (r"^repeat_explore_mechanism\.Ure\.", "re_u."),
        (r"^repeat_explore_mechanism\.Vre\.", "re_v."),
        (r"^repeat_explore_mechanism\.Wcre\.", "re_c."),
        (r"^repeat_recommendation_decoder\.Wr\.", "r_w."),
        (r"^repeat_recommendation_decoder\.Ur\.", "r_u."),
        (r"^repeat_recommendation_decoder\.Vr\.", "r_v."),
        (r"^explore_recommendation_decoder\.We\.", "e_w."),
        (r"^explore_recommendation_decoder\.Ue\.", "e_u."),
        (r"^explore_recommendation_decoder\.Ve\.", "e_v."),
        (r"^explore_recommendation_decoder\.matrix_for_explore\.", "explore."),
    ],
    "SINE": [(r"^C\.", "prototypes.")],
    "LightSANs": [
        (r"^trm_encoder\.layer\.", "layers."),
        (r"^LayerNorm\.", "norm."),
        (r"attpooling_key\.", "pool_key."),
        (r"attpooling_value\.", "pool_value."),
        (r"pos_q_linear\.", "pos_q."),
        (r"pos_k_linear\.", "pos_k."),
        (r"pos_ln\.", "pos_norm."),
        *_TRANSFORMER_KEYS,
    ],
}


def rename_state_dict(recbole_model: str, state_dict: dict[str, Any]) -> dict[str, Any]:
    """RecBole's parameter names -> the built-in model's (the one place that maps them)."""
    out = {}
    for key, value in state_dict.items():
        new = key
        for pattern, repl in RENAMES[recbole_model]:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out


class _Hyper:
    """Typed reads of a final_config_dict, naming the key when a value is missing or of the wrong type."""

    def __init__(self, config: dict[str, object], model: str) -> None:
        self.config = config
        self.model = model

    def integer(self, key: str) -> int:
        v = self.config.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UsageError(f"RecBole {self.model}: config {key}={v!r} is not a positive integer")
        return v

    def number(self, key: str) -> float:
        v = self.config.get(key)
        try:
            return float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise UsageError(f"RecBole {self.model}: config {key}={v!r} is not a number") from None

    def require(self, key: str, allowed: tuple[str, ...]) -> None:
        v = self.config.get(key)
        if v not in allowed:
            raise UsageError(
                f"RecBole {self.model}: {key}={v!r} is not supported (supported: {', '.join(map(str, allowed))})"
            )


def model_kwargs(recbole_model: str, config: dict[str, object]) -> dict[str, object]:
    """The built-in constructor's hyperparameters from RecBole's config (embedding size from the weights)."""
    h = _Hyper(config, recbole_model)
    kw: dict[str, object] = {"max_session_length": h.integer("MAX_ITEM_LIST_LENGTH")}
    if recbole_model in ("SASRec", "GCSAN", "CORE", "LightSANs"):
        h.require("hidden_act", ("gelu",))
        kw |= {"layers": h.integer("n_layers"), "heads": h.integer("n_heads"), "inner": h.integer("inner_size")}
        kw["eps"] = h.number("layer_norm_eps")
    if recbole_model == "GRU4Rec":
        kw |= {"hidden": h.integer("hidden_size"), "layers": h.integer("num_layers")}
    elif recbole_model == "NARM":
        kw |= {"hidden": h.integer("hidden_size"), "layers": h.integer("n_layers")}
    elif recbole_model == "SRGNN":
        kw["steps"] = h.integer("step")
    elif recbole_model == "GCSAN":
        kw |= {"steps": h.integer("step"), "weight": h.number("weight")}
    elif recbole_model == "CORE":
        h.require("dnn_type", ("trm",))
    elif recbole_model == "LightSANs":
        kw["interests"] = h.integer("k_interests")
    elif recbole_model == "SINE":
        kw |= {"prototypes": h.integer("prototype_size"), "interests": h.integer("interest_size")}
        kw |= {"tau": h.number("tau_ratio"), "eps": h.number("layer_norm_eps")}
    elif recbole_model == "RepeatNet":
        if h.integer("hidden_size") != h.integer("embedding_size"):
            raise UsageError("RecBole RepeatNet: hidden_size != embedding_size is not supported")
    return kw


def build_from_checkpoint(ckpt: Checkpoint, source: str) -> Any:
    """The built-in model with the checkpoint's hyperparameters and weights, in eval mode."""
    import torch

    from etude.models.registry import MODELS

    if ckpt.recbole_model not in SUPPORTED:
        raise UsageError(
            f"{source}: RecBole model {ckpt.recbole_model!r} is not supported; supported: {', '.join(SUPPORTED)}"
        )
    name, table_key = SUPPORTED[ckpt.recbole_model]
    table = ckpt.state_dict.get(table_key)
    if table is None or table.dim() != 2 or table.size(0) < 2:
        raise UsageError(f"{source}: the state_dict has no item table {table_key} with a padding row and items")
    catalog_size, dim = int(table.size(0)) - 1, int(table.size(1))
    kwargs = model_kwargs(ckpt.recbole_model, ckpt.config)
    try:
        model = MODELS[name](catalog_size=catalog_size, dim=dim, **kwargs)
    except (ValueError, RuntimeError) as err:
        raise UsageError(f"{source}: cannot build {ckpt.recbole_model} from its config: {_first_line(err)}") from None
    weights = rename_state_dict(ckpt.recbole_model, ckpt.state_dict)
    if ckpt.recbole_model == "GCSAN":  # RecBole's GC-SAN GNN has no edge biases
        weights.setdefault("gnn.b_iah", torch.zeros(dim))
        weights.setdefault("gnn.b_ioh", torch.zeros(dim))
    if ckpt.recbole_model == "CORE":
        weights.setdefault("inv_norm", torch.ones(catalog_size + 1))  # recomputed below
    ours = model.state_dict()
    missing = sorted(set(ours) - set(weights))
    unexpected = sorted(set(weights) - set(ours))
    wrong = sorted(k for k in set(ours) & set(weights) if tuple(ours[k].shape) != tuple(weights[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{what}: {', '.join(keys[:4])}" for what, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]  # fmt: skip
        raise UsageError(
            f"{source}: its weights do not match RecBole 1.2.1's {ckpt.recbole_model} with this config "
            f"({'; '.join(parts)})"
        )
    model.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()}, strict=True)
    refresh = getattr(model, "refresh_norms", None)
    if refresh is not None:
        refresh()
    return model.eval().requires_grad_(False)


def import_recbole(
    checkpoint: str, runtime: str, out: str, *, device: str = "cpu", if_missing: bool = False
) -> bool:
    """Read a RecBole checkpoint (path or gs://) and write it as a serialized model for `runtime`, served on
    `device`, to `out` (path or gs://), through the same artifact writer and contract check as `etude export`.

    Returns False when `if_missing` and `out` exists (nothing done). The file is written whole or not at all.
    """
    from etude.models.export import load_model, needs_writing, write_artifact

    if not needs_writing(runtime, device, out, if_missing=if_missing):
        return False
    ckpt = read_checkpoint(storage.read_bytes(checkpoint), checkpoint)
    model = build_from_checkpoint(ckpt, checkpoint)
    name = ckpt.recbole_model.lower()

    def fill(path: Path) -> None:
        write_artifact(model, name, runtime, device, path)
        load_model(str(path), allow_native_code=True)  # the contract check, on the artifact it just wrote

    size = storage.write_file(out, fill)
    log.info(
        "imported RecBole %s (C=%d, d=%d) from %s to %s (%s for %s): %.1f MB",
        ckpt.recbole_model,
        model.catalog_size,
        model.dim,
        checkpoint,
        out,
        runtime,
        device,
        size / 1e6,
    )
    return True


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
