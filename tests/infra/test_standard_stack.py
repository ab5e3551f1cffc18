"""StandardStack as a whole: snapshot, outputs, and how the constructs are wired together."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from tests.infra.conftest import Synthesized, normalise, only


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def test_template_matches_the_snapshot(
    synthesized_app: Synthesized, snapshot_json: SnapshotAssertion
) -> None:
    # Asset hashes are normalised, so only infrastructure changes show up here; update with
    # `pytest tests/infra --snapshot-update` and review the diff (renamed stateful ids!).
    assert normalise(synthesized_app.template("StandardStack")) == snapshot_json


def test_outputs_are_the_api_url_queue_url_and_dashboard(standard_template: Template) -> None:
    outputs = standard_template.to_json()["Outputs"]
    balancer = only(standard_template.find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer"))
    dashboard = only(standard_template.find_resources("AWS::CloudWatch::Dashboard"))
    queue = only(
        key
        for key, value in standard_template.find_resources("AWS::SQS::Queue").items()
        if "RedrivePolicy" in value["Properties"]
    )

    assert sorted(outputs) == ["ApiUrl", "DashboardName", "QueueUrl"]
    assert outputs["ApiUrl"]["Value"] == {
        "Fn::Join": ["", ["http://", {"Fn::GetAtt": [balancer, "DNSName"]}]]
    }
    assert outputs["QueueUrl"]["Value"] == {"Ref": queue}
    assert outputs["DashboardName"]["Value"] == {"Ref": dashboard}


def test_database_admits_exactly_the_four_service_groups(standard_template: Template) -> None:
    groups = standard_template.find_resources("AWS::EC2::SecurityGroup")
    database_group = only(key for key in groups if key.startswith("DatabaseSecurityGroup"))
    sources = sorted(
        rule["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0]
        for rule in standard_template.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == {"Fn::GetAtt": [database_group, "GroupId"]}
    )

    assert [source.rstrip("0123456789ABCDEF") for source in sources] == [
        "ApiSecurityGroup",
        "MigrationsSecurityGroup",
        "SchedulerSecurityGroup",
        "WorkerSecurityGroup",
    ]


def test_scheduler_and_migrations_run_in_the_vpc_with_their_groups(
    standard_template: Template,
) -> None:
    functions = standard_template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"PackageType": "Image"}}
    )

    for key, function in functions.items():
        config = function["Properties"]["VpcConfig"]
        group = only(config["SecurityGroupIds"])["Fn::GetAtt"][0]
        assert group.startswith(key.split("Function")[0]), (key, group)
        assert all("PrivateSubnet" in subnet["Ref"] for subnet in config["SubnetIds"])
    assert len(functions) == 2


def test_services_wait_for_migrations_which_wait_for_the_database(
    standard_template: Template,
) -> None:
    resources: dict[str, Any] = standard_template.to_json()["Resources"]
    trigger = only(standard_template.find_resources("Custom::Trigger"))
    database = only(standard_template.find_resources("AWS::RDS::DBInstance"))

    for key, resource in resources.items():
        if resource["Type"] == "AWS::ECS::Service" or (
            resource["Type"] == "AWS::Lambda::Function" and key.startswith("Scheduler")
        ):
            assert trigger in resource["DependsOn"], key
    assert database in resources[trigger]["DependsOn"]


def test_worker_and_api_run_images_of_their_own_dockerfiles(
    synthesized_app: Synthesized, standard_template: Template
) -> None:
    images = synthesized_app.assets("StandardStack")["dockerImages"]
    dockerfile_by_hash = {key: value["source"]["dockerFile"] for key, value in images.items()}
    tasks = standard_template.find_resources("AWS::ECS::TaskDefinition")

    used = {}
    for task in tasks.values():
        container = only(task["Properties"]["ContainerDefinitions"])
        image_hash = str(container["Image"]).rsplit(":", 1)[-1].strip("'}\" ")
        used[container["Name"]] = dockerfile_by_hash[image_hash]
    assert used == {"Api": "api/Dockerfile", "Worker": "worker/Dockerfile"}
    assert {value["source"]["platform"] for value in images.values()} == {"linux/amd64"}


def test_cluster_has_container_insights(standard_template: Template) -> None:
    cluster = only(standard_template.find_resources("AWS::ECS::Cluster").values())

    assert cluster["Properties"]["ClusterSettings"] == [
        {"Name": "containerInsights", "Value": "enabled"}
    ]
