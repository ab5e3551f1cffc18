"""WorkerTaskDefinition: the worker container, its stop timeout, logs and task role."""

from __future__ import annotations

import pytest
from aws_cdk import Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template

from flow_constructs.worker_task import WorkerTaskDefinition
from tests.infra.conftest import only, synth_stacks


def _build(stack: Stack) -> None:
    queue = sqs.Queue(stack, "Queue")
    secret = secretsmanager.Secret(stack, "DatabaseUrl")
    WorkerTaskDefinition(
        stack,
        "WorkerTask",
        image=ecs.ContainerImage.from_registry("worker:test"),
        cpu=512,
        memory_limit_mib=2048,
        cpu_architecture=ecs.CpuArchitecture.ARM64,
        environment={"LOG_LEVEL": "DEBUG"},
        secrets={"DATABASE_URL": ecs.Secret.from_secrets_manager(secret)},
        log_retention=logs.RetentionDays.ONE_WEEK,
        queue=queue,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return synth_stacks({"WorkerTaskTest": _build}, tmp_path_factory.mktemp("worker-task"))[
        "WorkerTaskTest"
    ]


def _container(template: Template) -> dict:
    task = only(template.find_resources("AWS::ECS::TaskDefinition").values())
    return only(task["Properties"]["ContainerDefinitions"])


def test_task_size_and_platform(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Cpu": "512",
            "Memory": "2048",
            "RequiresCompatibilities": ["FARGATE"],
            "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
        },
    )


def test_container_gets_two_minutes_to_stop(template: Template) -> None:
    container = _container(template)

    assert container["Name"] == "Worker"
    assert container["StopTimeout"] == 120
    assert "Command" not in container  # the image's `python -m worker`


def test_queue_url_and_settings_are_plain_and_credentials_are_secrets(template: Template) -> None:
    container = _container(template)

    environment = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert sorted(environment) == ["LOG_LEVEL", "QUEUE_URL"]
    assert environment["LOG_LEVEL"] == "DEBUG"
    assert environment["QUEUE_URL"]["Ref"].startswith("Queue")
    assert [item["Name"] for item in container["Secrets"]] == ["DATABASE_URL"]


def test_logs_go_to_a_group_with_retention(template: Template) -> None:
    container = _container(template)
    group = only(template.find_resources("AWS::Logs::LogGroup"))

    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 7})
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": group}


def test_task_role_may_work_the_queue_and_protect_the_task(template: Template) -> None:
    policies = template.find_resources(
        "AWS::IAM::Policy",
        {"Properties": {"Roles": [{"Ref": Match.string_like_regexp("TaskRole")}]}},
    )
    statements = only(policies.values())["Properties"]["PolicyDocument"]["Statement"]
    actions = {action for statement in statements for action in _listed(statement["Action"])}

    assert {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "ecs:UpdateTaskProtection",
        "ecs:GetTaskProtection",
    } <= actions
    protection = only(s for s in statements if "ecs:UpdateTaskProtection" in _listed(s["Action"]))
    assert protection["Resource"]["Fn::Join"][1][-1] == ":task/*"


def test_execution_role_reads_the_database_secret(template: Template) -> None:
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": [{"Ref": Match.string_like_regexp("ExecutionRole")}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": [
                                    "secretsmanager:DescribeSecret",
                                    "secretsmanager:GetSecretValue",
                                ],
                                "Resource": {"Ref": Match.string_like_regexp("^DatabaseUrl")},
                            }
                        )
                    ]
                )
            },
        },
    )


def _listed(action: str | list[str]) -> list[str]:
    return [action] if isinstance(action, str) else action
