"""Stack config of the Pulumi side: the experiment spec (etude.spec) plus the platform's and the image's settings.

Everything is read and validated here, before the program declares a single resource. A stack is one of:

- a platform stack (`dev`): no `etude:scenario`/`etude:variants`; builds the cluster, bucket, identities, registry;
- a use-case stack with `etude:platformStack`: runs its experiment on that platform (a StackReference);
- a use-case stack without it: builds a platform of its own, then runs its experiment on it.

Keys beyond the spec's (`etude.spec.CONFIG_KEYS`) that only the Pulumi side reads:

    etude:platform   {releaseChannel, deletionProtection, resultsRetentionDays, namespace}
    etude:image      a prebuilt image reference (used for every variant) or {cpu: ref, cuda: ref};
                     absent: the program builds the images from the Dockerfile and pushes them to the registry
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from etude.spec import (
    CONFIG_KEYS,
    NAMESPACE,
    ConfigModel,
    Experiment,
    SpecError,
    etude_keys,
    spec_from_config,
    validate,
)

PULUMI_KEYS = ("platform", "image")
STRING_KEYS = ("platformStack", "runId")  # kept as given: `runId: "1"` must stay the string "1"
ALLOWED_KEYS = (*CONFIG_KEYS, *PULUMI_KEYS)


class PlatformSettings(ConfigModel):
    """`etude:platform`: how the platform (cluster, bucket, namespace) is built."""

    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = "REGULAR"
    deletion_protection: bool = True
    results_retention_days: int = Field(default=90, ge=0, le=3650)  # 0 keeps results forever
    namespace: str = Field(default="etude", pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ImageSettings(ConfigModel):
    """`etude:image`: prebuilt images; a plain string is used for CPU and GPU variants alike."""

    cpu: str = Field(min_length=1)
    cuda: str | None = None

    @property
    def for_gpu(self) -> str:
        return self.cuda or self.cpu


@dataclass(frozen=True)
class StackConfig:
    stack: str
    experiment: Experiment | None  # None: a platform-only stack
    platform: PlatformSettings
    image: ImageSettings | None  # None: build from the Dockerfile

    @property
    def builds_platform(self) -> bool:
        return self.experiment is None or self.experiment.platform_stack is None


def read_config(stack: str, values: Mapping[str, Any]) -> StackConfig:
    """Validate a stack's `etude:*` values (short keys or `etude:`-prefixed) into a StackConfig. Raises SpecError."""
    short = etude_keys(values, ALLOWED_KEYS)
    platform = validate(PlatformSettings, short.pop("platform", None) or {}, "platform")
    image_value = short.pop("image", None)
    if isinstance(image_value, str):
        image_value = {"cpu": image_value}
    image = None if image_value is None else validate(ImageSettings, image_value, "image")
    experiment = None
    if "scenario" in short or "variants" in short:
        experiment = spec_from_config(stack, short)
    elif short.get("platformStack") is not None:
        raise SpecError(f"{NAMESPACE}:scenario: missing; a stack with {NAMESPACE}:platformStack runs an experiment")
    return StackConfig(stack=stack, experiment=experiment, platform=platform, image=image)


def parse_value(key: str, raw: str) -> Any:
    """A config value as Pulumi hands it to the program (structured values arrive as JSON text)."""
    if key in STRING_KEYS:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # a plain string (an image reference); the validation says if it is wrong


def config_from_pulumi() -> dict[str, Any]:
    """The stack's `etude:*` values from the Pulumi runtime, typos included (so that they fail loudly)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    # Every key the engine passed, to catch `etude:sequentail` instead of silently ignoring it.
    keys = {*runtime_config.CONFIG.get(), *runtime_config.get_config_env()}
    names = {k.partition(":")[2] for k in keys if k.startswith(f"{NAMESPACE}:")} | set(ALLOWED_KEYS)
    cfg = pulumi.Config(NAMESPACE)
    values: dict[str, Any] = {}
    for name in sorted(names):
        raw = cfg.get(name)
        if raw is not None:
            values[name] = parse_value(name, raw)
    return values
