"""WorkQueue: encrypted, TLS-only queue and dead-letter queue with their two alarms."""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template

from flow_constructs.work_queue import WorkQueue
from tests.infra.conftest import only, synth_stacks


def _build(stack: Stack) -> None:
    topic = sns.Topic(stack, "Topic")
    WorkQueue(
        stack,
        "WorkQueue",
        visibility_timeout=Duration.minutes(5),
        max_receive_count=4,
        oldest_message_age_threshold=Duration.minutes(15),
        alarm_action=cw_actions.SnsAction(topic),
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    outdir: Path = tmp_path_factory.mktemp("work-queue")
    return synth_stacks({"WorkQueueTest": _build}, outdir)["WorkQueueTest"]


def _queue_ids(template: Template) -> tuple[str, str]:
    queues = template.find_resources("AWS::SQS::Queue")
    main = only(key for key, value in queues.items() if "RedrivePolicy" in value["Properties"])
    dead = only(key for key in queues if key != main)
    return main, dead


def test_queue_redrives_to_the_dead_letter_queue(template: Template) -> None:
    main, dead = _queue_ids(template)

    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "VisibilityTimeout": 300,
            "SqsManagedSseEnabled": True,
            "RedrivePolicy": {
                "deadLetterTargetArn": {"Fn::GetAtt": [dead, "Arn"]},
                "maxReceiveCount": 4,
            },
        },
    )
    dead_props = template.find_resources("AWS::SQS::Queue")[dead]["Properties"]
    assert dead_props["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dead_props["SqsManagedSseEnabled"] is True
    assert main != dead


def test_both_queues_deny_requests_without_tls(template: Template) -> None:
    policies = template.find_resources("AWS::SQS::QueuePolicy")

    covered = set()
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        deny = only(s for s in statements if s["Effect"] == "Deny")
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert deny["Principal"] == {"AWS": "*"}
        assert deny["Action"] == "sqs:*"
        covered.update(queue["Ref"] for queue in policy["Properties"]["Queues"])
    assert covered == set(_queue_ids(template))


def test_dead_letter_alarm_fires_on_the_first_message(template: Template) -> None:
    _, dead = _queue_ids(template)

    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dead, "QueueName"]}}],
            "Statistic": "Maximum",
            "Period": 60,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": Match.string_like_regexp("^Topic")}],
        },
    )


def test_oldest_message_alarm_uses_the_threshold(template: Template) -> None:
    main, _ = _queue_ids(template)

    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "ApproximateAgeOfOldestMessage",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [main, "QueueName"]}}],
            "Threshold": 900,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "EvaluationPeriods": 3,
            "DatapointsToAlarm": 3,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": Match.string_like_regexp("^Topic")}],
        },
    )
    template.resource_count_is("AWS::CloudWatch::Alarm", 2)
