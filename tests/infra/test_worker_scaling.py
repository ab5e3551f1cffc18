"""WorkerService and QueueDrivenScaling: from zero on one message, back to zero when idle."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Template

from flow_constructs.worker_scaling import scale_out_steps
from flow_constructs.worker_service import WorkerService
from flow_constructs.worker_task import WorkerTaskDefinition
from tests.infra.conftest import only, synth_stacks

RUNS_PER_TASK = 10


def _build(stack: Stack) -> None:
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1)
    cluster = ecs.Cluster(stack, "Cluster", vpc=vpc)
    queue = sqs.Queue(stack, "Queue")
    task = WorkerTaskDefinition(
        stack,
        "WorkerTask",
        image=ecs.ContainerImage.from_registry("worker:test"),
        cpu=256,
        memory_limit_mib=512,
        cpu_architecture=ecs.CpuArchitecture.X86_64,
        environment={},
        secrets={},
        log_retention=logs.RetentionDays.ONE_WEEK,
        queue=queue,
    )
    WorkerService(
        stack,
        "Worker",
        cluster=cluster,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        worker_task=task,
        queue=queue,
        max_tasks=7,
        runs_per_task=RUNS_PER_TASK,
        scale_in_after=Duration.minutes(12),
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return synth_stacks({"WorkerScalingTest": _build}, tmp_path_factory.mktemp("scaling"))[
        "WorkerScalingTest"
    ]


def _policy(template: Template, adjustment_type: str) -> tuple[str, dict[str, Any]]:
    return only(
        (key, value)
        for key, value in template.find_resources(
            "AWS::ApplicationAutoScaling::ScalingPolicy"
        ).items()
        if value["Properties"]["StepScalingPolicyConfiguration"]["AdjustmentType"]
        == adjustment_type
    )


def _alarm_for(template: Template, policy_id: str) -> dict[str, Any]:
    return only(
        alarm["Properties"]
        for alarm in template.find_resources("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"]["AlarmActions"] == [{"Ref": policy_id}]
    )


def _tasks_added(template: Template, visible_messages: int) -> int:
    """What Application Auto Scaling adds for a backlog, evaluated from the template."""
    policy_id, policy = _policy(template, "ChangeInCapacity")
    threshold = _alarm_for(template, policy_id)["Threshold"]
    difference = visible_messages - threshold
    for step in policy["Properties"]["StepScalingPolicyConfiguration"]["StepAdjustments"]:
        lower = step.get("MetricIntervalLowerBound", float("-inf"))
        upper = step.get("MetricIntervalUpperBound", float("inf"))
        if lower <= difference < upper:
            return step["ScalingAdjustment"]
    raise AssertionError(f"no step covers {visible_messages} visible messages")


def test_service_scales_between_zero_and_max(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {"MinCapacity": 0, "MaxCapacity": 7, "ScalableDimension": "ecs:service:DesiredCount"},
    )


def test_desired_count_is_left_to_the_scaling(template: Template) -> None:
    service = only(template.find_resources("AWS::ECS::Service").values())["Properties"]

    assert "DesiredCount" not in service
    assert service["DeploymentConfiguration"]["MinimumHealthyPercent"] == 100
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
        "Enable": True,
        "Rollback": True,
    }


def test_queue_not_empty_alarm_watches_visible_messages_every_minute(template: Template) -> None:
    policy_id, _ = _policy(template, "ChangeInCapacity")
    alarm = _alarm_for(template, policy_id)

    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Period"] == 60
    assert alarm["Statistic"] == "Maximum"
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize(
    ("visible_messages", "tasks"),
    [(1, 1), (19, 1), (20, 2), (49, 2), (50, 5), (5000, 5)],
)
def test_one_message_starts_one_task_and_backlogs_start_more(
    template: Template, visible_messages: int, tasks: int
) -> None:
    assert _tasks_added(template, visible_messages) == tasks


def test_steps_follow_the_runs_per_task() -> None:
    assert scale_out_steps(10) == ((1, 1), (20, 2), (50, 5))
    assert scale_out_steps(1) == ((1, 1), (2, 2), (5, 5))


def test_queue_empty_alarm_counts_in_flight_runs_and_missing_data_as_empty(
    template: Template,
) -> None:
    policy_id, policy = _policy(template, "ExactCapacity")
    alarm = _alarm_for(template, policy_id)
    metrics = {metric["Id"]: metric for metric in alarm["Metrics"]}
    expression = only(metric for metric in alarm["Metrics"] if "Expression" in metric)

    assert policy["Properties"]["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
        {"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}
    ]
    assert expression["Expression"] == "visible + inFlight"
    assert metrics["visible"]["MetricStat"]["Metric"]["MetricName"] == (
        "ApproximateNumberOfMessagesVisible"
    )
    assert metrics["inFlight"]["MetricStat"]["Metric"]["MetricName"] == (
        "ApproximateNumberOfMessagesNotVisible"
    )
    periods = {m["MetricStat"]["Period"] for m in metrics.values() if "MetricStat" in m}
    assert periods == {60}
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "LessThanOrEqualToThreshold"
    assert alarm["EvaluationPeriods"] == 12
    assert alarm["DatapointsToAlarm"] == 12
    assert alarm["TreatMissingData"] == "breaching"


def test_no_cpu_or_target_tracking_scaling(template: Template) -> None:
    policies = template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy")

    assert len(policies) == 2
    assert {p["Properties"]["PolicyType"] for p in policies.values()} == {"StepScaling"}
