"""Spot interruption monitoring (flow_constructs.spot_interruptions), on a minimal stack."""

from __future__ import annotations

import pytest
from aws_cdk import Stack
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template

from flow_constructs.spot_interruptions import SpotInterruptionMonitor
from tests.infra.conftest import synth_stacks


def _build(stack: Stack) -> None:
    vpc = ec2.Vpc.from_vpc_attributes(
        stack, "Vpc", vpc_id="vpc-0123456789abcdef0", availability_zones=["us-east-1a"]
    )
    cluster = ecs.Cluster(stack, "Cluster", vpc=vpc, enable_fargate_capacity_providers=True)
    topic = sns.Topic(stack, "Alarms")
    SpotInterruptionMonitor(
        stack,
        "SpotInterruptions",
        cluster=cluster,
        log_retention=logs.RetentionDays.TWO_WEEKS,
        alarm_action=actions.SnsAction(topic),
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    outdir = tmp_path_factory.mktemp("spot-interruptions")
    return synth_stacks({"SpotTest": _build}, outdir)["SpotTest"]


def test_rule_matches_spot_stops_of_this_cluster_only(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.ecs"],
                "detail-type": ["ECS Task State Change"],
                "detail": {
                    "clusterArn": [{"Fn::GetAtt": [Match.string_like_regexp("^Cluster"), "Arn"]}],
                    "lastStatus": ["STOPPED"],
                    "stopCode": ["SpotInterruption"],
                },
            },
            "State": "ENABLED",
        },
    )


def test_events_go_to_a_retention_bound_log_group(template: Template) -> None:
    (rule,) = template.find_resources("AWS::Events::Rule").values()
    (target,) = rule["Properties"]["Targets"]
    log_group_id = target["Arn"]["Fn::GetAtt"][0]
    log_group = template.to_json()["Resources"][log_group_id]

    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"] == {
        "LogGroupName": "/aws/events/SpotTest/spot-interruptions",
        "RetentionInDays": 14,
    }


def test_log_group_lets_eventbridge_write_without_a_custom_resource(template: Template) -> None:
    template.resource_count_is("AWS::Lambda::Function", 0)
    template.resource_count_is("Custom::CloudwatchLogResourcePolicy", 0)
    (policy,) = template.find_resources("AWS::Logs::ResourcePolicy").values()
    document = policy["Properties"]["PolicyDocument"]

    assert "events.amazonaws.com" in str(document)
    assert "logs:PutLogEvents" in str(document)
    assert "logs:CreateLogStream" in str(document)


def test_any_interruption_raises_the_alarm(template: Template) -> None:
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/Events",
            "MetricName": "TriggeredRules",
            "Dimensions": [
                {"Name": "RuleName", "Value": {"Ref": Match.string_like_regexp("Rule")}}
            ],
            "Statistic": "Sum",
            "Period": 300,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": Match.string_like_regexp("^Alarms")}],
        },
    )
