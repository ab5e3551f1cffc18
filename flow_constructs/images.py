"""The API and worker container images, built from the repository root."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent

# The images run Lambda handlers through the runtime interface client in requirements.txt.
LAMBDA_ENTRYPOINT = ("python", "-m", "awslambdaric")


# Architecture name -> (ECS, Lambda, image platform). Names, not the jsii objects: every
# access to `ecs.CpuArchitecture.ARM64` returns a new proxy, and proxies never compare equal.
ARCHITECTURES = {
    "X86_64": (
        ecs.CpuArchitecture.X86_64,
        lambda_.Architecture.X86_64,
        ecr_assets.Platform.LINUX_AMD64,
    ),
    "ARM64": (
        ecs.CpuArchitecture.ARM64,
        lambda_.Architecture.ARM_64,
        ecr_assets.Platform.LINUX_ARM64,
    ),
}


class ServiceImages(Construct):
    """The two images every stack deploys: `api` and `worker` (also scheduler, migrations).

    Args:
        cpu_architecture: "X86_64" or "ARM64", the architecture the images are built for;
            every task and function that runs them must use `.cpu_architecture` /
            `.lambda_architecture`. Default: "X86_64".

    Synth only stages the build context (filtered by `.dockerignore`); the images are built
    and pushed by `cdk deploy`, which needs a Docker engine.
    """

    def __init__(self, scope: Construct, id: str, *, cpu_architecture: str = "X86_64") -> None:
        super().__init__(scope, id)
        if cpu_architecture not in ARCHITECTURES:
            raise ValueError(
                f"cpu_architecture: got {cpu_architecture!r}, expected one of "
                + ", ".join(repr(name) for name in ARCHITECTURES)
            )
        self.cpu_architecture_name = cpu_architecture
        self.cpu_architecture, self.lambda_architecture, platform = ARCHITECTURES[
            cpu_architecture
        ]

        self.api = ecr_assets.DockerImageAsset(
            self, "Api", directory=str(REPOSITORY_ROOT), file="api/Dockerfile", platform=platform
        )
        self.worker = ecr_assets.DockerImageAsset(
            self,
            "Worker",
            directory=str(REPOSITORY_ROOT),
            file="worker/Dockerfile",
            platform=platform,
        )


def container_image(asset: ecr_assets.DockerImageAsset) -> ecs.ContainerImage:
    """The image as an ECS container image (the execution role gets pull rights)."""
    return ecs.ContainerImage.from_docker_image_asset(asset)


def lambda_image_code(
    asset: ecr_assets.DockerImageAsset, *, cmd: Sequence[str]
) -> lambda_.DockerImageCode:
    """The image as Lambda code running the handler named by `cmd` (e.g. `["pkg.mod.handler"]`).

    The function reuses the one pushed image instead of staging a second asset.
    """
    return lambda_.DockerImageCode.from_ecr(
        asset.repository,
        tag_or_digest=asset.image_tag,
        entrypoint=list(LAMBDA_ENTRYPOINT),
        cmd=list(cmd),
    )
