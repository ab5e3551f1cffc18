"""ServiceImages: two image assets from the repository root, reused by tasks and functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from flow_constructs.images import ServiceImages, container_image, lambda_image_code
from tests.infra.conftest import only, synth_stacks


def _build(stack: Stack, architecture: str) -> None:
    images = ServiceImages(stack, "Images", cpu_architecture=architecture)
    task = ecs.FargateTaskDefinition(
        stack,
        "Task",
        runtime_platform=ecs.RuntimePlatform(cpu_architecture=images.cpu_architecture),
    )
    task.add_container("Worker", image=container_image(images.worker))
    lambda_.DockerImageFunction(
        stack,
        "Function",
        code=lambda_image_code(images.worker, cmd=["worker.scheduler.handler"]),
        architecture=images.lambda_architecture,
    )


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def templates(outdir: Path) -> dict[str, Template]:
    return synth_stacks(
        {
            "ImagesX86": lambda stack: _build(stack, "X86_64"),
            "ImagesArm": lambda stack: _build(stack, "ARM64"),
        },
        outdir,
    )


def _docker_images(outdir: Path, stack: str) -> dict:
    return json.loads((outdir / f"{stack}.assets.json").read_text())["dockerImages"]


@pytest.mark.parametrize(
    ("stack", "platform", "task_arch", "lambda_arch"),
    [
        ("ImagesX86", "linux/amd64", "X86_64", "x86_64"),
        ("ImagesArm", "linux/arm64", "ARM64", "arm64"),
    ],
)
def test_architecture_reaches_images_tasks_and_functions(
    templates: dict[str, Template],
    outdir: Path,
    stack: str,
    platform: str,
    task_arch: str,
    lambda_arch: str,
) -> None:
    images = _docker_images(outdir, stack)
    template = templates[stack]
    task = only(template.find_resources("AWS::ECS::TaskDefinition").values())
    function = only(
        template.find_resources(
            "AWS::Lambda::Function", {"Properties": {"PackageType": "Image"}}
        ).values()
    )

    assert sorted(image["source"]["dockerFile"] for image in images.values()) == [
        "api/Dockerfile",
        "worker/Dockerfile",
    ]
    assert {image["source"]["platform"] for image in images.values()} == {platform}
    assert task["Properties"]["RuntimePlatform"]["CpuArchitecture"] == task_arch
    assert function["Properties"]["Architectures"] == [lambda_arch]


def test_function_reuses_the_worker_image_with_the_runtime_client(
    templates: dict[str, Template], outdir: Path
) -> None:
    images = _docker_images(outdir, "ImagesX86")
    worker_hash = only(
        k for k, v in images.items() if v["source"]["dockerFile"] == "worker/Dockerfile"
    )
    template = templates["ImagesX86"]
    function = only(
        template.find_resources(
            "AWS::Lambda::Function", {"Properties": {"PackageType": "Image"}}
        ).values()
    )
    task = only(template.find_resources("AWS::ECS::TaskDefinition").values())

    assert function["Properties"]["ImageConfig"] == {
        "Command": ["worker.scheduler.handler"],
        "EntryPoint": ["python", "-m", "awslambdaric"],
    }
    assert worker_hash in json.dumps(function["Properties"]["Code"]["ImageUri"])
    assert worker_hash in json.dumps(only(task["Properties"]["ContainerDefinitions"])["Image"])


def test_build_context_is_only_the_service_code(
    outdir: Path, templates: dict[str, Template]
) -> None:
    images = _docker_images(outdir, "ImagesX86")

    for image in images.values():
        staged = outdir / image["source"]["directory"]
        # .dockerignore keeps the venv, node_modules, tests and infrastructure code out.
        assert sorted(path.name for path in staged.iterdir()) == [
            ".dockerignore",
            "api",
            "flows",
            "requirements.txt",
            "worker",
        ]


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu_architecture: got 'arm', expected one of"):
        ServiceImages(Stack(), "Images", cpu_architecture="arm")
