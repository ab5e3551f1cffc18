"""SchedulerFunction: every minute, one at a time, from the worker image, errors alarmed."""

from __future__ import annotations

import pytest
from aws_cdk import Stack
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template

from flow_constructs.scheduler import SCHEDULER_HANDLER, SchedulerFunction
from tests.infra.conftest import only, synth_stacks


def _build(stack: Stack, *, in_vpc: bool) -> None:
    repository = ecr.Repository.from_repository_name(stack, "Repo", "worker")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1) if in_vpc else None
    SchedulerFunction(
        stack,
        "Scheduler",
        code=lambda_.DockerImageCode.from_ecr(
            repository, cmd=[SCHEDULER_HANDLER], entrypoint=["python", "-m", "awslambdaric"]
        ),
        environment={"LOG_LEVEL": "INFO"},
        queue=sqs.Queue(stack, "Queue"),
        dead_letter_queue=sqs.Queue(stack, "DeadLetterQueue"),
        database_secret=secretsmanager.Secret(stack, "DatabaseSecret"),
        log_retention=logs.RetentionDays.TWO_WEEKS,
        vpc=vpc,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        if in_vpc
        else None,
        alarm_action=cw_actions.SnsAction(sns.Topic(stack, "Topic")),
    )


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    return synth_stacks(
        {
            "SchedulerOutsideVpc": lambda stack: _build(stack, in_vpc=False),
            "SchedulerInVpc": lambda stack: _build(stack, in_vpc=True),
        },
        tmp_path_factory.mktemp("scheduler"),
    )


@pytest.fixture(scope="module")
def template(templates: dict[str, Template]) -> Template:
    return templates["SchedulerOutsideVpc"]


def _function(template: Template) -> tuple[str, dict]:
    functions = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"PackageType": "Image"}}
    )
    return only(functions.items())


def test_function_runs_the_scheduler_handler_one_at_a_time(template: Template) -> None:
    _, function = _function(template)
    props = function["Properties"]

    assert props["PackageType"] == "Image"
    assert props["ImageConfig"] == {
        "Command": ["worker.scheduler.handler"],
        "EntryPoint": ["python", "-m", "awslambdaric"],
    }
    assert props["ReservedConcurrentExecutions"] == 1
    assert props["Timeout"] < 60
    assert "VpcConfig" not in props


def test_function_is_told_where_queues_and_database_are(template: Template) -> None:
    _, function = _function(template)
    variables = function["Properties"]["Environment"]["Variables"]

    assert sorted(variables) == [
        "DATABASE_SECRET_ARN",
        "DEAD_LETTER_QUEUE_URL",
        "LOG_LEVEL",
        "QUEUE_URL",
    ]
    assert variables["QUEUE_URL"]["Ref"].startswith("Queue")
    assert variables["DEAD_LETTER_QUEUE_URL"]["Ref"].startswith("DeadLetterQueue")
    assert variables["DATABASE_SECRET_ARN"]["Ref"].startswith("DatabaseSecret")


def test_rule_invokes_it_every_minute_without_retries(template: Template) -> None:
    function_id, _ = _function(template)

    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(1 minute)",
            "State": "ENABLED",
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {"Fn::GetAtt": [function_id, "Arn"]},
                        "RetryPolicy": {"MaximumRetryAttempts": 0},
                    }
                )
            ],
        },
    )


def test_role_sends_to_the_queue_drains_the_dead_letters_and_reads_the_secret(
    template: Template,
) -> None:
    policy = only(template.find_resources("AWS::IAM::Policy").values())
    grants = {
        (tuple(sorted(_listed(s["Action"]))), _target(s["Resource"]))
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    }

    assert any("sqs:SendMessage" in actions and target == "Queue" for actions, target in grants)
    assert any(
        "sqs:ReceiveMessage" in actions and "sqs:DeleteMessage" in actions
        and target == "DeadLetterQueue"
        for actions, target in grants
    )
    assert any(
        "secretsmanager:GetSecretValue" in actions and target == "DatabaseSecret"
        for actions, target in grants
    )
    assert not any("sqs:SendMessage" in a and t == "DeadLetterQueue" for a, t in grants)


def test_errors_alarm_notifies(template: Template) -> None:
    function_id, _ = _function(template)

    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "Errors",
            "Namespace": "AWS/Lambda",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function_id}}],
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": Match.string_like_regexp("^Topic")}],
        },
    )


def test_logs_have_retention(template: Template) -> None:
    function_id, function = _function(template)
    group = only(template.find_resources("AWS::Logs::LogGroup"))

    assert function["Properties"]["LoggingConfig"] == {"LogGroup": {"Ref": group}}
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 14})
    assert function_id


def test_function_in_a_vpc_uses_the_private_subnets(templates: dict[str, Template]) -> None:
    _, function = _function(templates["SchedulerInVpc"])
    subnets = function["Properties"]["VpcConfig"]["SubnetIds"]

    assert len(subnets) == 2
    assert all("PrivateSubnet" in subnet["Ref"] for subnet in subnets)


def _listed(action: str | list[str]) -> list[str]:
    return [action] if isinstance(action, str) else action


def _target(resource: object) -> str:
    """The construct id a statement's resource points at ('Queue', 'DatabaseSecret', ...)."""
    text = str(resource)
    for name in ("DeadLetterQueue", "DatabaseSecret", "Queue"):
        if f"'{name}" in text:
            return name
    return text
