"""UltraStack as `cdk synth` builds it from cdk.json: what it creates, and what it must not."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aws_cdk import Validations
from aws_cdk.assertions import Match, Template
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from stacks.ultra import DATABASE_URL_PLACEHOLDER
from tests.infra.conftest import Synthesized, normalise

# Resources that bill while idle or that belong to the user's existing network.
FORBIDDEN = (
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::NatGateway",
    "AWS::EC2::EIP",
    "AWS::EC2::Instance",
    "AWS::EC2::InternetGateway",
    "AWS::EC2::VPCEndpoint",
    "AWS::RDS::DBInstance",
    "AWS::RDS::DBCluster",
    "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "AWS::ElasticLoadBalancing::LoadBalancer",
    "AWS::ECS::Service",
    "AWS::AutoScaling::AutoScalingGroup",
)


@pytest.fixture(scope="module")
def template(synthesized_app: Synthesized) -> Template:
    return Template.from_json(synthesized_app.template("UltraStack"))


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def test_template_matches_the_snapshot(
    synthesized_app: Synthesized, snapshot_json: SnapshotAssertion
) -> None:
    # Asset hashes are normalised, so only infrastructure changes show up here; update with
    # `pytest tests/infra --snapshot-update` and review the diff (renamed stateful ids!).
    assert normalise(synthesized_app.template("UltraStack")) == snapshot_json


def test_every_acknowledgement_names_one_finding_and_a_reason(
    synthesized_app: Synthesized,
) -> None:
    # test_nag.py checks every acknowledgement of the app; this pins UltraStack's own set.
    stack = synthesized_app.app.node.find_child("UltraStack")
    acknowledged = [
        (construct.node.path, finding.split("::", 1)[-1], reason)
        for construct in stack.node.find_all()
        for entry in construct.node.metadata
        if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        for finding, reason in entry.data.items()
    ]

    assert {finding.split("[")[0] for _, finding, _ in acknowledged} == {
        "AwsSolutions-ECS2",
        "AwsSolutions-ECS4",
        "AwsSolutions-IAM4",
        "AwsSolutions-IAM5",
        "AwsSolutions-SMG4",
        "AwsSolutions-SNS2",
    }
    for path, finding, reason in acknowledged:
        assert re.fullmatch(r"AwsSolutions-[A-Z]+\d+(\[[^\]]+\])?", finding), (path, finding)
        assert len(reason) >= 60, (path, finding, reason)


def test_no_warning_annotations(synthesized_app: Synthesized) -> None:
    assert [m for m in synthesized_app.messages("warning") if "UltraStack" in m[0]] == []


def _only(template: Template, kind: str) -> dict[str, Any]:
    (resource,) = template.find_resources(kind).values()
    return resource["Properties"]


@pytest.mark.parametrize("kind", FORBIDDEN)
def test_nothing_idle_billed_or_network_owning_is_created(template: Template, kind: str) -> None:
    template.resource_count_is(kind, 0)


def test_cluster_offers_fargate_spot(template: Template) -> None:
    associations = _only(template, "AWS::ECS::ClusterCapacityProviderAssociations")

    assert sorted(associations["CapacityProviders"]) == ["FARGATE", "FARGATE_SPOT"]


def test_pipe_starts_spot_tasks_in_the_configured_public_subnet(template: Template) -> None:
    params = _only(template, "AWS::Pipes::Pipe")["TargetParameters"]["EcsTaskParameters"]

    assert params["CapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}]
    assert params["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"] == [
        "subnet-0123456789abcdef0"
    ]
    assert params["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "ENABLED"
    assert params["Overrides"]["ContainerOverrides"][0]["Name"] == "Worker"


def test_worker_security_group_has_no_ingress(template: Template) -> None:
    group = _only(template, "AWS::EC2::SecurityGroup")

    assert "SecurityGroupIngress" not in group
    assert group["VpcId"] == "vpc-0123456789abcdef0"
    template.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)


def test_worker_stops_within_the_spot_notice(template: Template) -> None:
    task = _only(template, "AWS::ECS::TaskDefinition")
    (container,) = task["ContainerDefinitions"]

    assert container["StopTimeout"] == 120
    (secret,) = container["Secrets"]
    assert secret["Name"] == "DATABASE_URL"
    assert secret["ValueFrom"]["Ref"].startswith("DatabaseUrl")
    assert task["RuntimePlatform"]["CpuArchitecture"] == "X86_64"
    assert (task["Cpu"], task["Memory"]) == ("256", "512")


def test_lambdas_run_outside_any_vpc(template: Template) -> None:
    functions = template.find_resources("AWS::Lambda::Function").values()

    assert functions
    assert [f for f in functions if "VpcConfig" in f["Properties"]] == []


def test_scheduler_runs_every_minute_one_at_a_time(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "ImageConfig": Match.object_like({"Command": ["worker.scheduler.handler"]}),
            "ReservedConcurrentExecutions": 1,
        },
    )
    template.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "rate(1 minute)"})


def test_api_is_a_lambda_behind_a_function_url(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {"ImageConfig": Match.object_like({"Command": ["api.lambda_handler.handler"]})},
    )
    template.has_resource_properties("AWS::Lambda::Url", {"AuthType": "NONE"})


def test_without_a_database_secret_one_is_created_to_fill(template: Template) -> None:
    secrets = template.find_resources(
        "AWS::SecretsManager::Secret",
        {"Properties": {"SecretString": DATABASE_URL_PLACEHOLDER}},
    )
    (secret,) = secrets.values()

    assert secret["Properties"]["Name"] == "UltraStack/database-url"
    # Kept when the stack later imports it by name via ultra.databaseSecret.
    assert secret["DeletionPolicy"] == "Retain"


def test_migrations_wait_until_the_database_secret_is_set(template: Template) -> None:
    template.resource_count_is("Custom::Trigger", 0)


def test_outputs_api_url_queue_url_and_secret_to_fill(template: Template) -> None:
    outputs = template.find_outputs("*")

    assert set(outputs) == {"ApiUrl", "QueueUrl", "DatabaseSecretName", "DatabaseSecretArn"}
    assert outputs["DatabaseSecretArn"]["Value"]["Ref"].startswith("DatabaseUrl")
    assert outputs["DatabaseSecretName"]["Value"] == "UltraStack/database-url"
    assert "put-secret-value" in outputs["DatabaseSecretName"]["Description"]


def test_spot_interruptions_and_pipe_failures_are_alarmed(template: Template) -> None:
    metrics = {
        (props["Namespace"], props["MetricName"])
        for props in (
            a["Properties"] for a in template.find_resources("AWS::CloudWatch::Alarm").values()
        )
        if "Namespace" in props
    }

    assert ("AWS/Events", "TriggeredRules") in metrics
    assert ("AWS/EventBridge/Pipes", "TargetStageFailed") in metrics
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in metrics


def test_every_alarm_notifies_the_alarm_topic(template: Template) -> None:
    alarms = template.find_resources("AWS::CloudWatch::Alarm").values()

    assert alarms
    for alarm in alarms:
        (action,) = alarm["Properties"]["AlarmActions"]
        assert action["Ref"].startswith("AlarmsTopic")


def test_every_log_group_has_a_retention(template: Template) -> None:
    groups = template.find_resources("AWS::Logs::LogGroup").values()

    assert groups
    assert [g for g in groups if "RetentionInDays" not in g["Properties"]] == []
