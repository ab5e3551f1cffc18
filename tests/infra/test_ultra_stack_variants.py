"""UltraStack built from a non-default `ultra` block: existing secret, ARM64, on-demand, no API.

One synth covers every non-default branch; the default stack is checked in test_ultra_stack.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Validations
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks

from stacks.ultra import SPOT_ARM64_WARNING, UltraStack
from stacks.ultra_config import UltraConfig
from tests.infra.conftest import TEST_ENV, cdk_context, feature_flags

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:flow-builder/db-AbC123"
SUBNET_B = "subnet-0fedcba9876543210"

# The cdk.json defaults with every branch switched the other way.
BLOCK = {
    **cdk_context()["ultra"],
    "publicSubnetIds": ["subnet-0123456789abcdef0", SUBNET_B],
    "availabilityZones": ["eu-west-1a", "eu-west-1b"],
    "workerSubnetId": SUBNET_B,
    "databaseSecret": SECRET_ARN,
    "cpuArchitecture": "ARM64",
    "workerCpu": 512,
    "workerMemoryMiB": 1024,
    "onDemandBase": 1,
    "onDemandWeight": 2,
    "api": "none",
    "alarmEmail": "ops@example.com",
}


@pytest.fixture(scope="module")
def stack() -> UltraStack:
    app = App(context=feature_flags())
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return UltraStack(app, "UltraStack", config=UltraConfig.from_context(BLOCK), env=TEST_ENV)


@pytest.fixture(scope="module")
def template(stack: UltraStack) -> Template:
    # Synthesizing runs cdk-nag: an unacknowledged finding fails this fixture.
    return Template.from_stack(stack)


def _resources(template: Template, kind: str) -> dict[str, Any]:
    return template.find_resources(kind)


def test_an_existing_secret_is_imported_and_migrations_run_first(template: Template) -> None:
    template.resource_count_is("AWS::SecretsManager::Secret", 0)
    template.resource_count_is("Custom::Trigger", 1)
    (trigger_id,) = template.find_resources("Custom::Trigger")
    for kind in ("AWS::Pipes::Pipe", "AWS::Events::Rule"):
        dependants = [
            logical_id
            for logical_id, resource in _resources(template, kind).items()
            if trigger_id in resource.get("DependsOn", [])
        ]
        assert dependants, f"no {kind} waits for the migrations trigger"


def test_functions_read_the_existing_secret_by_arn(template: Template) -> None:
    functions = _resources(template, "AWS::Lambda::Function").values()
    secret_arns = {
        f["Properties"]["Environment"]["Variables"].get("DATABASE_SECRET_ARN")
        for f in functions
        if "Environment" in f["Properties"]
    }

    assert SECRET_ARN in secret_arns


def test_worker_gets_the_url_from_the_existing_secret(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "ContainerDefinitions": [
                Match.object_like({"Secrets": [{"Name": "DATABASE_URL", "ValueFrom": SECRET_ARN}]})
            ],
            "Cpu": "512",
            "Memory": "1024",
            "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
        },
    )


def test_on_demand_base_and_weight_join_spot(template: Template) -> None:
    (pipe,) = _resources(template, "AWS::Pipes::Pipe").values()
    params = pipe["Properties"]["TargetParameters"]["EcsTaskParameters"]

    assert params["CapacityProviderStrategy"] == [
        {"CapacityProvider": "FARGATE_SPOT", "Weight": 1},
        {"CapacityProvider": "FARGATE", "Base": 1, "Weight": 2},
    ]
    assert params["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"] == [SUBNET_B]


def test_without_api_there_is_no_function_url(template: Template) -> None:
    template.resource_count_is("AWS::Lambda::Url", 0)
    assert "ApiUrl" not in template.find_outputs("*")
    assert "DatabaseSecretName" not in template.find_outputs("*")


def test_alarm_email_is_subscribed(template: Template) -> None:
    template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"}
    )


def test_arm64_with_spot_is_a_warning(stack: UltraStack, template: Template) -> None:
    warnings = Annotations.from_stack(stack).find_warning("*", Match.any_value())

    assert len(warnings) == 1
    assert warnings[0].id == "/UltraStack"
    assert f"[ack: {SPOT_ARM64_WARNING}]" in str(warnings[0].entry.data)
    assert "ARM64" in str(warnings[0].entry.data)


def test_arm64_images_run_on_arm64_functions(template: Template) -> None:
    # The scheduler and migrations run the worker image, built for the configured platform.
    image_functions = [
        f["Properties"]
        for f in _resources(template, "AWS::Lambda::Function").values()
        if f["Properties"].get("PackageType") == "Image"
    ]

    assert len(image_functions) == 2
    assert all(props["Architectures"] == ["arm64"] for props in image_functions)


@pytest.fixture(scope="module")
def named_secret_template() -> Template:
    # The cdk.json defaults, with the database secret given by name.
    block = {**cdk_context()["ultra"], "databaseSecret": "flow-builder/database-url"}
    app = App(context=feature_flags())
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    stack = UltraStack(app, "UltraStack", config=UltraConfig.from_context(block), env=TEST_ENV)
    return Template.from_stack(stack)


def test_a_secret_given_by_name_is_read_by_the_worker_itself(
    named_secret_template: Template,
) -> None:
    task = named_secret_template.find_resources("AWS::ECS::TaskDefinition")
    ((_, resource),) = task.items()
    (container,) = resource["Properties"]["ContainerDefinitions"]
    variables = {item["Name"]: item["Value"] for item in container["Environment"]}

    # ECS cannot resolve a secret by name reliably, so none is injected.
    assert "Secrets" not in container
    assert variables["DATABASE_SECRET_ARN"] == "flow-builder/database-url"
    task_role_policy = next(
        policy["Properties"]["PolicyDocument"]["Statement"]
        for key, policy in named_secret_template.find_resources("AWS::IAM::Policy").items()
        if key.startswith("WorkerTaskDefinitionTaskRole")
    )
    secret_reads = [s for s in task_role_policy if "secretsmanager:GetSecretValue" in s["Action"]]
    assert len(secret_reads) == 1
    assert "secret:flow-builder/database-url-??????" in json.dumps(secret_reads[0]["Resource"])
