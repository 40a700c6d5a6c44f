"""The Pulumi program behind `__main__.py`: a platform, an experiment, or both, from a validated `StackConfig`.

`__main__.py` validates all config first (`etude.infra.config`) and only then calls `build`, so invalid config fails
before any resource is declared.

Naming a platform stack: `etude:platformStack: dev` becomes the StackReference
`<organization>/<project>/dev` (`pulumi.get_organization()`: your Pulumi Cloud organization, or `organization`
on a self-managed backend such as `pulumi login gs://...` or `--local`); a value with slashes
(`acme/etude/dev`) is used as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi import ResourceOptions

from etude.catalog import INSTANCE_TYPES
from etude.components.experiment import EtudeExperiment, EtudeExperimentArgs, peak_gpus
from etude.infra.config import StackConfig
from etude.infra.image import build_images, given_images
from etude.infra.platform import Platform, PlatformArgs, PlatformOutputs
from etude.spec import Experiment, SpecError

PLATFORM_NAME = "etude"


@dataclass(frozen=True)
class GcpSettings:
    project: str
    region: str


def gcp_settings(cfg: StackConfig, project: str | None, region: str | None) -> GcpSettings | None:
    """`gcp:project` and `gcp:region`, required where this stack builds a platform."""
    if not cfg.builds_platform:
        return None
    for key, value in (("gcp:project", project), ("gcp:region", region)):
        if not value:
            raise SpecError(f"{key}: missing; this stack builds a platform: pulumi config set {key} <value>")
    return GcpSettings(project=str(project), region=str(region))


def platform_stack_name(ref: str) -> str:
    """`dev` -> `<organization>/<project>/dev`; a fully qualified name is kept."""
    if "/" in ref:
        return ref
    return f"{pulumi.get_organization()}/{pulumi.get_project()}/{ref}"


def gpu_quota_message(exp: Experiment) -> str:
    """What the stack's GPUs need of the region's quota, said before anything is created."""
    peak = peak_gpus(exp)
    if not peak:
        return f"stack {exp.stack}: no GPU variants; no GPU quota needed"
    quota = {t.accelerator: t.gpu_quota for t in INSTANCE_TYPES.values() if t.accelerator}
    held = ", ".join(f"{n} x {acc} (quota {quota.get(acc) or '?'} >= {n})" for acc, n in peak.items())
    how = ("one variant at a time (sequential)" if exp.sequential else
           "all variants at once; `etude:sequential: true` would need "
           + ", ".join(f"{n} x {acc}" for acc, n in peak_gpus(exp, sequential=True).items()))
    return (f"stack {exp.stack}: peak GPUs held at the same time: {held}, {how}. Check the region's quota "
            "before `pulumi up` (README, \"GPU quota\").")


def build(cfg: StackConfig, gcp: GcpSettings | None) -> dict[str, Any]:
    """Declare the stack's resources; returns the stack outputs."""
    outputs: dict[str, Any] = {}
    exp = cfg.experiment
    if exp is not None:  # before any resource: quota trouble is cheapest to find here
        pulumi.log.info(gpu_quota_message(exp))
        outputs["peakGpus"] = peak_gpus(exp)
    if cfg.builds_platform:
        assert gcp is not None
        platform = Platform(PLATFORM_NAME, PlatformArgs(project=gcp.project, region=gcp.region,
                                                        settings=cfg.platform, stack=cfg.stack))
        outputs.update(platform.stack_outputs)
        plat, provider = platform.outputs, platform.k8s_provider
    else:
        assert exp is not None and exp.platform_stack is not None
        ref = pulumi.StackReference(platform_stack_name(exp.platform_stack))
        plat = PlatformOutputs.from_stack(ref)
        provider = k8s.Provider(f"{cfg.stack}-k8s", kubeconfig=plat.kubeconfig)
        outputs["platformStack"] = ref.name
    if exp is None:
        return outputs

    need_cuda = any(v.instance.gpus for v in exp.variants)
    if cfg.image is not None:
        images = given_images(cfg.image.cpu, cfg.image.for_gpu)
    else:
        images = build_images(cfg.stack, plat.registry, need_cuda=need_cuda)
    experiment = EtudeExperiment(
        cfg.stack,
        EtudeExperimentArgs(
            experiment=exp,
            namespace=plat.namespace,
            service_account=plat.service_account,
            bucket=plat.bucket,
            project=plat.project,
            image_cpu=images.cpu,
            image_cuda=images.cuda,
        ),
        opts=ResourceOptions(providers=[provider]),
    )
    outputs.update({
        "results": experiment.results,
        "cheapestWithinSlo": experiment.cheapest_within_slo,
        "resultsRoot": experiment.results_root,
        "namespace": plat.namespace,
    })
    return outputs
