"""Database: encrypted Multi-AZ PostgreSQL in isolated subnets, TLS only, reachable by name."""

from __future__ import annotations

import pytest
from aws_cdk import Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Template

from flow_constructs.database import Database
from tests.infra.conftest import only, synth_stacks


def _build(stack: Stack, *, production: bool) -> None:
    vpc = ec2.Vpc(
        stack,
        "Vpc",
        max_azs=2,
        nat_gateways=1,
        subnet_configuration=[
            ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC),
            ec2.SubnetConfiguration(
                name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
            ),
            ec2.SubnetConfiguration(
                name="Isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED
            ),
        ],
    )
    database = Database(
        stack,
        "Database",
        vpc=vpc,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
        instance_type="t4g.small",
        allocated_storage_gib=20,
        max_allocated_storage_gib=100,
        multi_az=production,
        deletion_protection=production,
        snapshot_on_delete=production,
        backup_retention=Duration.days(7),
    )
    client = ec2.SecurityGroup(stack, "ClientGroup", vpc=vpc)
    database.allow_from(client, "PostgreSQL from the test client")


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    return synth_stacks(
        {
            "Production": lambda stack: _build(stack, production=True),
            "Development": lambda stack: _build(stack, production=False),
        },
        tmp_path_factory.mktemp("database"),
    )


def _instance(template: Template) -> dict:
    return only(template.find_resources("AWS::RDS::DBInstance").values())


def test_production_instance_is_protected_and_encrypted(templates: dict[str, Template]) -> None:
    instance = _instance(templates["Production"])
    props = instance["Properties"]

    assert props["Engine"] == "postgres"
    assert props["EngineVersion"].split(".")[0] == "18"
    assert props["DBInstanceClass"] == "db.t4g.small"
    assert props["MultiAZ"] is True
    assert props["StorageEncrypted"] is True
    assert props["DeletionProtection"] is True
    assert props["BackupRetentionPeriod"] == 7
    assert props["PubliclyAccessible"] is False
    assert (props["AllocatedStorage"], props["MaxAllocatedStorage"]) == ("20", 100)
    assert instance["DeletionPolicy"] == "Snapshot"
    assert instance["UpdateReplacePolicy"] == "Snapshot"


def test_development_instance_can_be_deleted(templates: dict[str, Template]) -> None:
    instance = _instance(templates["Development"])

    assert instance["Properties"]["MultiAZ"] is False
    assert instance["Properties"]["DeletionProtection"] is False
    assert instance["DeletionPolicy"] == "Delete"


def test_server_requires_tls(templates: dict[str, Template]) -> None:
    template = templates["Production"]
    group_id = only(template.find_resources("AWS::RDS::DBParameterGroup"))

    template.has_resource_properties(
        "AWS::RDS::DBParameterGroup",
        {"Family": "postgres18", "Parameters": {"rds.force_ssl": "1"}},
    )
    assert _instance(template)["Properties"]["DBParameterGroupName"] == {"Ref": group_id}


def test_instance_lives_in_the_isolated_subnets(templates: dict[str, Template]) -> None:
    group = only(templates["Production"].find_resources("AWS::RDS::DBSubnetGroup").values())
    subnets = group["Properties"]["SubnetIds"]

    assert len(subnets) == 2
    assert all("IsolatedSubnet" in subnet["Ref"] for subnet in subnets)


def test_only_named_groups_may_connect(templates: dict[str, Template]) -> None:
    template = templates["Production"]
    ingress = template.find_resources("AWS::EC2::SecurityGroupIngress")
    database_group = only(
        key
        for key, value in template.find_resources("AWS::EC2::SecurityGroup").items()
        if "Database" in key
    )
    group = template.find_resources("AWS::EC2::SecurityGroup")[database_group]["Properties"]

    rule = only(ingress.values())["Properties"]
    assert rule["GroupId"] == {"Fn::GetAtt": [database_group, "GroupId"]}
    assert rule["SourceSecurityGroupId"]["Fn::GetAtt"][0].startswith("ClientGroup")
    assert rule["FromPort"] == rule["ToPort"] == {
        "Fn::GetAtt": [only(template.find_resources("AWS::RDS::DBInstance")), "Endpoint.Port"]
    }
    assert "SecurityGroupIngress" not in group
    # CDK's marker for "no egress at all".
    assert group["SecurityGroupEgress"][0]["CidrIp"] == "255.255.255.255/32"


def test_generated_credentials_are_attached(templates: dict[str, Template]) -> None:
    template = templates["Production"]

    template.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {"GenerateSecretString": {"SecretStringTemplate": '{"username":"flows"}'}},
    )
    template.resource_count_is("AWS::SecretsManager::SecretTargetAttachment", 1)


def test_cpu_and_free_storage_alarms(templates: dict[str, Template]) -> None:
    template = templates["Production"]

    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"MetricName": "CPUUtilization", "Namespace": "AWS/RDS", "Threshold": 80},
    )
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "FreeStorageSpace",
            "ComparisonOperator": "LessThanThreshold",
            "Threshold": 2 * 1024**3,
        },
    )
