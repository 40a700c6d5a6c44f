"""The experiment spec: the single source of truth for `pulumi up` and `etude local`.

A use-case stack file (`Pulumi.<stack>.yaml`) holds, under the `etude` config namespace:

    etude:scenario:   catalogSize, targetRps, rampSeconds, holdSeconds, workload, slo, seed, arrivals,
                      burstiness, repeats, capacity
    etude:variants:   a list of {model | modelUri | recbole [+ itemIds], runtime, instanceType, replicas, name?}
    etude:platformStack  (optional) the `dev` stack to take the cluster and bucket from
    etude:runId          (optional) change it to re-run the measurement
    etude:sequential     (optional) measure variants one after another instead of in parallel
    etude:prices         (optional) {instanceType: monthly USD} overriding the catalog's prices

`spec_from_config` turns that mapping into a validated `Experiment`; `load_stack` reads a stack file and calls
it. Errors name the key, the value given and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from etude.catalog import INSTANCE_TYPES, InstanceType
from etude.errors import UsageError
from etude.sustained import ARRIVALS, DEFAULT_ARRIVALS

NAMESPACE = "etude"
PROJECT_DIR = Path(__file__).resolve().parent.parent

# Names of the built-in models (the runtime side's registry in models/ must match; a test checks it).
BUILTIN_MODELS = (
    "core",
    "gcsan",
    "gru4rec",
    "lightsans",
    "narm",
    "noop",
    "repeatnet",
    "sasrec",
    "sine",
    "srgnn",
    "stamp",
)
# How a model is exported and run (models/export.py, models/runtimes.py; docs/design.md, "Runtimes").
RUNTIMES = ("eager", "jit", "aot", "bf16", "int8", "onnx", "ann")
# Where an exported model is served: its artifact differs (models/export.py, "Devices").
EXPORT_DEVICES = ("cpu", "cuda")


class SpecError(UsageError, ValueError):
    """Invalid experiment config; the message names key, value and what is allowed."""


M = TypeVar("M", bound=BaseModel)


class ConfigModel(BaseModel):
    """Config values: camelCase keys in the stack file, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _local_path(uri: str | None, project_dir: Path) -> Path | None:
    """A file given as a local path (a relative one taken from `project_dir`); None for none or a gs:// URI."""
    if uri is None or uri.startswith("gs://"):
        return None
    path = Path(uri)
    return path if path.is_absolute() else project_dir / path


class Workload(ConfigModel):
    """Exactly one of: a preset, a pair of power-law exponents, a click log to replay, or a fitted workload model
    (`etude fit CLICKLOG --out FILE`). A file is a local path (relative to the project folder; `pulumi up`
    uploads it to the platform bucket) or a gs:// URI."""

    preset: Literal["bolcom", "rsc15"] | None = None
    alpha_length: float | None = Field(default=None, gt=0.0, le=10.0)
    alpha_clicks: float | None = Field(default=None, gt=0.0, le=10.0)
    clicklog: str | None = Field(default=None, min_length=1)
    fitted: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Workload:
        given = [self.preset is not None, self.alpha_length is not None or self.alpha_clicks is not None,
                 self.clicklog is not None, self.fitted is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of preset (bolcom|rsc15), alphaLength + alphaClicks, clicklog, "
                             "or fitted")
        if given[1] and (self.alpha_length is None or self.alpha_clicks is None):
            raise ValueError("alphaLength and alphaClicks go together")
        return self

    @property
    def file(self) -> str | None:
        """The click log or workload model file this workload reads, if any."""
        return self.clicklog if self.clicklog is not None else self.fitted

    def local_file(self, project_dir: Path = PROJECT_DIR) -> Path | None:
        """The workload file when it is a local path (a relative one taken from `project_dir`), else None."""
        return _local_path(self.file, project_dir)

    def cli_args(self, file_uri: str | None = None) -> list[str]:
        """The load generator's workload flags; `file_uri` replaces the file's path (its copy in the bucket)."""
        if self.preset is not None:
            return ["--preset", self.preset]
        if self.clicklog is not None:
            return ["--clicklog", file_uri or self.clicklog]
        if self.fitted is not None:
            return ["--workload", file_uri or self.fitted]
        return ["--alpha-length", str(self.alpha_length), "--alpha-clicks", str(self.alpha_clicks)]


class Slo(ConfigModel):
    percentile: float = Field(default=90.0, gt=0.0, lt=100.0)
    latency_ms: float = Field(default=50.0, gt=0.0)


class CapacitySearch(ConfigModel):
    """`search: true` measures the sustained capacity (docs/design.md, Capacity) instead of only judging the target."""

    search: bool = False
    max_rps: int | None = Field(default=None, ge=1, le=1_000_000)  # default: 2 x targetRps


class Scenario(ConfigModel):
    catalog_size: int = Field(ge=1, le=1_000_000_000)
    target_rps: int = Field(ge=1, le=1_000_000)
    ramp_seconds: int = Field(default=600, ge=1, le=86_400)
    hold_seconds: int = Field(default=60, ge=0, le=86_400)
    workload: Workload = Workload(preset="bolcom")
    slo: Slo = Slo()
    seed: int = Field(default=42, ge=0)
    arrivals: str = DEFAULT_ARRIVALS
    burstiness: float | None = Field(default=None, gt=1.0, le=100.0)
    repeats: int = Field(default=1, ge=1, le=20)
    capacity: CapacitySearch = CapacitySearch()

    @field_validator("arrivals")
    @classmethod
    def _known_arrivals(cls, v: str) -> str:
        if v not in ARRIVALS:
            raise ValueError(f"unknown arrival process; known: {', '.join(ARRIVALS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if (self.arrivals == "bursty") != (self.burstiness is not None):
            raise ValueError("burstiness (the gaps' coefficient of variation, > 1) goes with arrivals: bursty, and "
                             "bursty needs it")
        if self.capacity.max_rps is not None and not self.capacity.search:
            raise ValueError("capacity.maxRps goes with capacity.search: true")
        return self

    @property
    def embedding_dim(self) -> int:
        return embedding_dim(self.catalog_size)

    @property
    def embedding_bytes(self) -> int:
        """Size of the item embeddings (C x d float32): the bulk of a built-in model's file."""
        return self.catalog_size * self.embedding_dim * 4


def embedding_dim(catalog_size: int) -> int:
    """The paper's heuristic for the embedding size of built-in models: d = ceil(C ** 0.25)."""
    return int(math.ceil(catalog_size**0.25))


_DNS = re.compile(r"[^a-z0-9-]+")


class Variant(ConfigModel):
    """One deployment option to measure: a model on a runtime, an instance type and a replica count."""

    model: str | None = None
    model_uri: str | None = None
    recbole: str | None = None  # a RecBole checkpoint (.pth), imported in the export step
    item_ids: str | None = None  # its data set's item tokens in id order (replaying a click log with its ids)
    runtime: str = "jit"
    instance_type: str = "cpu"
    replicas: int = Field(default=1, ge=1, le=100)
    name: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str | None) -> str | None:
        if v is not None and v.lower() not in BUILTIN_MODELS:
            raise ValueError(f"unknown model; built-in models: {', '.join(BUILTIN_MODELS)} (or give modelUri)")
        return None if v is None else v.lower()

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, v: str) -> str:
        if v not in RUNTIMES:
            raise ValueError(f"unknown runtime; known runtimes: {', '.join(RUNTIMES)}")
        return v

    @field_validator("instance_type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in INSTANCE_TYPES:
            raise ValueError(f"unknown instance type; known: {', '.join(INSTANCE_TYPES)}")
        return v

    @field_validator("model_uri", "recbole", "item_ids")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("the URI is empty")
        return v

    @model_validator(mode="after")
    def _one_model(self) -> Variant:
        if [self.model, self.model_uri, self.recbole].count(None) != 2:
            raise ValueError(
                "give exactly one of model (a built-in name), modelUri (a serialized model) "
                "or recbole (a RecBole checkpoint)"
            )
        if self.item_ids is not None and self.model is not None:
            raise ValueError("itemIds names the item tokens a trained model was trained with; a built-in model "
                             "has random weights and no data set")
        return self

    def local_item_ids(self, project_dir: Path = PROJECT_DIR) -> Path | None:
        """The item token list when it is a local path (a relative one taken from `project_dir`), else None."""
        return _local_path(self.item_ids, project_dir)

    def local_model_file(self, project_dir: Path = PROJECT_DIR) -> Path | None:
        """The modelUri or RecBole checkpoint when it is a local path (a relative one taken from `project_dir`),
        else None."""
        return _local_path(self.model_uri or self.recbole, project_dir)

    @property
    def needs_export(self) -> bool:
        """A built-in model is exported, a RecBole checkpoint imported; a modelUri is served as it is."""
        return self.model_uri is None

    @property
    def model_label(self) -> str:
        """The built-in model name, or the stem of a user's model URI or RecBole checkpoint."""
        if self.model is not None:
            return self.model
        return Path(self.model_uri or self.recbole or "").stem or "custom"

    @property
    def key(self) -> str:
        """DNS-safe, unique within a stack: used for Kubernetes names and result folders."""
        if self.name:
            return self.name
        raw = f"{self.model_label}-{self.runtime}-{self.instance_type}".lower()
        return _DNS.sub("-", raw).strip("-")[:40].strip("-")

    @property
    def instance(self) -> InstanceType:
        return INSTANCE_TYPES[self.instance_type]


class Experiment(ConfigModel):
    stack: str
    scenario: Scenario
    variants: tuple[Variant, ...] = Field(min_length=1)
    platform_stack: str | None = None
    run_id: str = Field(default="1", pattern=r"^[A-Za-z0-9._-]{1,40}$")
    sequential: bool = False
    prices: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_and_priced(self) -> Experiment:
        keys = [v.key for v in self.variants]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"variants must be distinct; repeated: {', '.join(dupes)} (give them a name)")
        mapped = [v.key for v in self.variants if v.item_ids is not None]
        if mapped and self.scenario.workload.clicklog is None:
            raise ValueError(f"variants {', '.join(mapped)} give itemIds, which map the items of a click log; the "
                             "scenario's workload is not a clicklog")
        unknown = sorted(set(self.prices) - set(INSTANCE_TYPES))
        if unknown:
            raise ValueError(f"prices for unknown instance types {unknown}; known: {', '.join(INSTANCE_TYPES)}")
        return self

    def monthly_usd(self, variant: Variant) -> float:
        """Monthly cost of a variant: replicas x the price of its instance type (stack override or catalog)."""
        price = self.prices.get(variant.instance_type, variant.instance.monthly_usd)
        return round(variant.replicas * price, 2)


CONFIG_KEYS = ("scenario", "variants", "platformStack", "runId", "sequential", "prices")


def etude_keys(config: Mapping[str, Any], allowed: tuple[str, ...] = CONFIG_KEYS) -> dict[str, Any]:
    """The `etude:*` values of a stack's config by short key (keys may come with or without the prefix); keys of
    other namespaces (`gcp:project`, ...) are left out, an unknown `etude:` key is a SpecError naming the allowed."""
    values: dict[str, Any] = {}
    for key, value in config.items():
        ns, _, short = key.rpartition(":")
        if ns not in ("", NAMESPACE):
            continue
        if short not in allowed:
            raise SpecError(f"{NAMESPACE}:{short}: unknown key; allowed: {', '.join(allowed)}")
        if value is not None:
            values[short] = value
    return values


def validate(model: type[M], value: Any, key: str = "") -> M:
    """`model` from `value` (the config under `etude:<key>`); a SpecError naming key, value and what is allowed."""
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise SpecError(describe(err, key)) from None


def spec_from_config(stack: str, config: Mapping[str, Any]) -> Experiment:
    """Validate a stack's `etude:*` config (keys with or without the `etude:` prefix) into an Experiment.

    Keys outside the `etude` namespace (`gcp:project`, ...) are ignored. Raises SpecError.
    """
    values: dict[str, Any] = {"stack": stack, **etude_keys(config)}
    for required in ("scenario", "variants"):
        if required not in values:
            raise SpecError(f"{NAMESPACE}:{required}: missing; every use-case stack needs it")
    return validate(Experiment, values)


def describe(err: ValidationError, key: str = "") -> str:
    """One line per problem: `etude:<key>.<path> = <value>: <what is allowed>`."""
    lines = []
    errors = err.errors()
    for e in errors:
        loc = [str(p) for p in e["loc"]]
        nested = any(len(o["loc"]) > len(e["loc"]) and o["loc"][: len(e["loc"])] == e["loc"] for o in errors)
        if e["type"] == "too_short" and nested:
            continue  # a list emptied by its own invalid items: the items' errors say it
        path = ".".join([key, *loc] if key else loc)
        where = f"{NAMESPACE}:{path}" if path else f"{NAMESPACE}:(stack)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{where} = {e['input']!r}: {msg}" if e["type"] != "missing" else f"{where}: missing")
    return "; ".join(lines)


def stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    return project_dir / f"Pulumi.{stack}.yaml"


def available_stacks(project_dir: Path = PROJECT_DIR) -> list[str]:
    """Use-case stacks in the project (every Pulumi.<stack>.yaml except the platform's `dev`)."""
    names = (p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in project_dir.glob("Pulumi.*.yaml"))
    return sorted(n for n in names if n != "dev")


def load_stack(stack: str, project_dir: Path = PROJECT_DIR) -> Experiment:
    """Read and validate `Pulumi.<stack>.yaml`. A path to a stack file is accepted too."""
    path = Path(stack) if stack.endswith((".yaml", ".yml")) else stack_file(stack, project_dir)
    if not path.is_file():
        known = ", ".join(available_stacks(project_dir)) or "none"
        raise SpecError(f"no stack file {path} for stack {stack!r}; stacks here: {known}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        raise SpecError(f"{path}: no `config:` mapping")
    name = path.name.removeprefix("Pulumi.").removesuffix(".yaml").removesuffix(".yml")
    try:
        return spec_from_config(name, config)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
