"""The SQS -> ECS RunTask pipe construct (flow_constructs.pipe), on a minimal stack."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template

from flow_constructs.pipe import EcsTaskTarget, LogLevel, Pipe, PipeConfigError, SqsSource
from tests.infra.conftest import synth_stacks

SPOT = ecs.CapacityProviderStrategy(capacity_provider="FARGATE_SPOT", weight=1)


def _parts(
    stack: Stack, *, strategies=(SPOT,), batch_size: int = 1
) -> tuple[SqsSource, EcsTaskTarget]:
    """A queue, a cluster in an imported VPC and a one-container task, in `stack`."""
    vpc = ec2.Vpc.from_vpc_attributes(
        stack, "Vpc", vpc_id="vpc-0123456789abcdef0", availability_zones=["eu-west-1a"]
    )
    subnet = ec2.Subnet.from_subnet_attributes(
        stack,
        "Subnet",
        subnet_id="subnet-0123456789abcdef0",
        availability_zone="eu-west-1a",
        route_table_id="rtb-0123456789abcdef0",
    )
    group = ec2.SecurityGroup(stack, "TaskSecurityGroup", vpc=vpc, description="worker tasks")
    cluster = ecs.Cluster(stack, "Cluster", vpc=vpc, enable_fargate_capacity_providers=True)
    task = ecs.FargateTaskDefinition(stack, "Task", family="worker-family")
    task.add_container("worker", image=ecs.ContainerImage.from_registry("worker:latest"))
    queue = sqs.Queue(stack, "Queue")
    source = SqsSource(queue=queue, batch_size=batch_size)
    target = EcsTaskTarget(
        cluster=cluster,
        task_definition=task,
        container_name="worker",
        capacity_provider_strategies=list(strategies),
        subnets=[subnet],
        security_groups=[group],
        assign_public_ip=True,
        environment={"RUN_ID": "$.body.run_id"},
    )
    return source, target


def _build_default(stack: Stack) -> None:
    source, target = _parts(stack)
    pipe = Pipe(
        stack,
        "WorkerPipe",
        source=source,
        target=target,
        log_retention=logs.RetentionDays.ONE_WEEK,
    )
    pipe.add_target_failure_alarm("TargetFailureAlarm")


def _build_on_demand(stack: Stack) -> None:
    on_demand = ecs.CapacityProviderStrategy(capacity_provider="FARGATE", base=1, weight=0)
    source, target = _parts(stack, strategies=(SPOT, on_demand))
    Pipe(
        stack,
        "Pipe",
        source=source,
        target=target,
        log_retention=logs.RetentionDays.ONE_DAY,
        log_level=LogLevel.INFO,
    )


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    outdir = tmp_path_factory.mktemp("pipe")
    return synth_stacks({"PipeTest": _build_default, "OnDemandTest": _build_on_demand}, outdir)


@pytest.fixture(scope="module")
def template(templates: dict[str, Template]) -> Template:
    return templates["PipeTest"]


def _pipe(template: Template) -> dict[str, Any]:
    (pipe,) = template.find_resources("AWS::Pipes::Pipe").values()
    return pipe["Properties"]


def _ecs_parameters(template: Template) -> dict[str, Any]:
    return _pipe(template)["TargetParameters"]["EcsTaskParameters"]


def test_source_reads_one_message_per_execution(template: Template) -> None:
    assert _pipe(template)["SourceParameters"] == {"SqsQueueParameters": {"BatchSize": 1}}


def test_target_runs_on_fargate_spot_without_a_launch_type(template: Template) -> None:
    params = _ecs_parameters(template)

    assert params["CapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}]
    assert "LaunchType" not in params
    assert params["TaskCount"] == 1


def test_task_gets_a_public_ip_in_the_given_subnet_and_group(template: Template) -> None:
    awsvpc = _ecs_parameters(template)["NetworkConfiguration"]["AwsvpcConfiguration"]

    assert awsvpc["AssignPublicIp"] == "ENABLED"
    assert awsvpc["Subnets"] == ["subnet-0123456789abcdef0"]
    (group,) = awsvpc["SecurityGroups"]
    assert group["Fn::GetAtt"][0].startswith("TaskSecurityGroup")
    assert group["Fn::GetAtt"][1] == "GroupId"


def test_run_id_override_is_the_only_override(template: Template) -> None:
    overrides = _ecs_parameters(template)["Overrides"]

    # Cpu, Memory and the like are left out: a zero would override the task definition.
    assert overrides == {
        "ContainerOverrides": [
            {"Name": "worker", "Environment": [{"Name": "RUN_ID", "Value": "$.body.run_id"}]}
        ]
    }


def test_pipe_logs_errors_without_execution_data(template: Template) -> None:
    log_configuration = _pipe(template)["LogConfiguration"]

    assert log_configuration["Level"] == "ERROR"
    assert "IncludeExecutionData" not in log_configuration
    template.has_resource_properties(
        "AWS::Logs::LogGroup",
        {"LogGroupName": "/aws/vendedlogs/pipes/PipeTest/WorkerPipe", "RetentionInDays": 7},
    )


def _statements(template: Template) -> list[dict[str, Any]]:
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"PolicyName": Match.string_like_regexp("WorkerPipe")}}
    )
    (policy,) = policies.values()
    return policy["Properties"]["PolicyDocument"]["Statement"]


def test_role_may_only_consume_the_queue_run_the_task_and_pass_its_roles(
    template: Template,
) -> None:
    receive = frozenset({"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"})
    statements = {
        frozenset(s["Action"] if isinstance(s["Action"], list) else [s["Action"]]): s
        for s in _statements(template)
    }

    assert set(statements) == {receive, frozenset({"ecs:RunTask"}), frozenset({"iam:PassRole"})}
    assert statements[receive]["Resource"]["Fn::GetAtt"][0].startswith("Queue")
    run_task = statements[frozenset({"ecs:RunTask"})]
    assert run_task["Resource"] == {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":ecs:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":task-definition/worker-family:*",
            ],
        ]
    }
    (cluster_arn,) = run_task["Condition"]["ArnEquals"].values()
    assert list(run_task["Condition"]["ArnEquals"]) == ["ecs:cluster"]
    assert cluster_arn["Fn::GetAtt"][0].startswith("Cluster")
    passed = statements[frozenset({"iam:PassRole"})]
    roles = sorted(ref["Fn::GetAtt"][0] for ref in passed["Resource"])
    assert [re.sub(r"[0-9A-F]{8}$", "", name) for name in roles] == [
        "TaskExecutionRole",
        "TaskTaskRole",
    ]
    assert passed["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }


def test_role_is_assumable_by_pipes_of_this_account_only(template: Template) -> None:
    template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    {
                        "Principal": {"Service": "pipes.amazonaws.com"},
                        "Condition": {
                            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
                        },
                    }
                ]
            }
        },
    )


def test_pipe_waits_for_its_role_policy(template: Template) -> None:
    (pipe,) = template.find_resources("AWS::Pipes::Pipe").values()

    assert any(dep.startswith("WorkerPipeRoleDefaultPolicy") for dep in pipe["DependsOn"])


def test_target_failures_are_alarmed(template: Template) -> None:
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/EventBridge/Pipes",
            "MetricName": "TargetStageFailed",
            "Dimensions": [{"Name": "PipeName", "Value": {"Ref": Match.any_value()}}],
            "Statistic": "Sum",
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
        },
    )


def test_on_demand_base_is_written_and_zero_base_left_out(
    templates: dict[str, Template],
) -> None:
    props = _pipe(templates["OnDemandTest"])

    assert props["TargetParameters"]["EcsTaskParameters"]["CapacityProviderStrategy"] == [
        {"CapacityProvider": "FARGATE_SPOT", "Weight": 1},
        {"CapacityProvider": "FARGATE", "Base": 1, "Weight": 0},
    ]
    assert props["LogConfiguration"]["Level"] == "INFO"


def _refused(**parts: Any) -> str:
    """The error of building a pipe from `parts` (nothing is synthesized)."""
    stack = Stack(App(), "PipeTest")
    source, target = _parts(stack, **parts)
    with pytest.raises(PipeConfigError) as raised:
        Pipe(stack, "Pipe", source=source, target=target, log_retention=logs.RetentionDays.ONE_DAY)
    return str(raised.value)


def test_batches_are_refused_for_an_ecs_target() -> None:
    assert _refused(batch_size=10) == (
        "pipe PipeTest/Pipe: batch_size: got 10, an ECS task target takes exactly 1"
    )


def test_every_strategy_problem_is_reported_at_once() -> None:
    both_with_base = (
        ecs.CapacityProviderStrategy(capacity_provider="FARGATE_SPOT", base=1, weight=1),
        ecs.CapacityProviderStrategy(capacity_provider="FARGATE", base=1, weight=1),
    )

    assert _refused(strategies=both_with_base, batch_size=2) == (
        "pipe PipeTest/Pipe: capacity_provider_strategies: FARGATE_SPOT, FARGATE all set a"
        " base; ECS allows a base on one capacity provider only; batch_size: got 2, an ECS"
        " task target takes exactly 1"
    )


def test_an_empty_strategy_is_refused() -> None:
    assert _refused(strategies=()) == (
        "pipe PipeTest/Pipe: capacity_provider_strategies: give at least one capacity provider"
    )
