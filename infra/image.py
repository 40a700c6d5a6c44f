"""The container images: built from the repository's Dockerfile and pushed to the platform's Artifact Registry.

One Dockerfile, two flavours chosen by a build argument: `cpu` (the CPU torch wheel, small) for CPU variants and
the load generator, `cuda` (the CUDA torch wheel; the driver comes from the GKE GPU node) for GPU variants.
Only the flavours a stack needs are built. With `etude:image` set, nothing is built and those references are used.
Images are referenced by digest, so a rebuilt image rolls the servers and an unchanged one changes nothing.

Each stack pushes its own image, `<registry>/etude-<stack>:<flavour>`: deleting an Image (`pulumi destroy` of a
use case) deletes what it pushed, which must never be what another stack's pods pull. The layer cache
(`etude-cache:<flavour>`) is shared, so a second stack's build reuses the first one's layers.
The build context and Dockerfile are given relative to the project (Pulumi runs the program there), so the
same commit previews the same inputs in any checkout (CI, a laptop) instead of a change of every image.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pulumi
import pulumi_docker_build as docker_build
import pulumi_gcp as gcp
from pulumi import Input, Output, ResourceOptions

from etude.spec import PROJECT_DIR

TORCH_INDEX = {
    "cpu": "https://download.pytorch.org/whl/cpu",
    "cuda": "https://download.pytorch.org/whl/cu128",
}


@dataclass(frozen=True)
class Images:
    cpu: Input[str]  # CPU variants and the load generator
    cuda: Input[str]  # GPU variants


def build_paths() -> tuple[str, str]:
    """The build context and the Dockerfile, relative to the working directory (the project when Pulumi runs)."""
    context = os.path.relpath(PROJECT_DIR)
    return context, os.path.relpath(PROJECT_DIR / "Dockerfile")


def image_repository(stack: str) -> str:
    """The stack's own image name in the registry (lowercase letters, digits, `.`, `_`, `-`)."""
    return "etude-" + re.sub(r"[^a-z0-9._-]+", "-", stack.lower())


def build_images(name: str, registry: Output[str], *, need_cuda: bool, opts: ResourceOptions | None = None) -> Images:
    """Build and push the CPU image (always) and the CUDA image (when a GPU variant needs it) to `registry`, under
    the image name of stack `name`."""
    token = gcp.organizations.get_client_config_output().access_token
    address = registry.apply(lambda r: r.split("/", 1)[0])
    login = [docker_build.RegistryArgs(address=address, username="oauth2accesstoken", password=token)]

    context, dockerfile = build_paths()

    def image(flavour: str) -> Output[str]:
        cache = registry.apply(lambda r: f"{r}/etude-cache:{flavour}")  # layers shared by every machine that builds
        built = docker_build.Image(
            f"{name}-image-{flavour}",
            context=docker_build.BuildContextArgs(location=context),
            dockerfile=docker_build.DockerfileArgs(location=dockerfile),
            build_args={"TORCH_INDEX_URL": TORCH_INDEX[flavour]},
            platforms=[docker_build.Platform.LINUX_AMD64],
            push=True,
            tags=[registry.apply(lambda r: f"{r}/{image_repository(name)}:{flavour}")],
            registries=login,
            cache_from=[docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=cache))],
            cache_to=[docker_build.CacheToArgs(registry=docker_build.CacheToRegistryArgs(
                ref=cache, mode=docker_build.CacheMode.MAX, image_manifest=True, oci_media_types=True))],
            build_on_preview=False,  # `pulumi preview` stays fast; an unchanged context keeps its digest
            opts=opts,
        )
        return built.ref  # tag@sha256:digest

    cpu = image("cpu")
    return Images(cpu=cpu, cuda=image("cuda") if need_cuda else cpu)


def given_images(cpu: str, cuda: str) -> Images:
    pulumi.log.info(f"using the prebuilt images from etude:image ({cpu}, {cuda}); nothing is built")
    return Images(cpu=cpu, cuda=cuda)
