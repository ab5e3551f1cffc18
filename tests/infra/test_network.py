"""Network: three subnet tiers over the zones, NAT gateways or one NAT instance, flow logs."""

from __future__ import annotations

import pytest
from aws_cdk import Stack
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template

from flow_constructs.network import Network
from tests.infra.conftest import only, synth_stacks


def _build(stack: Stack, *, nat_provider: str, max_azs: int, nat_gateways: int) -> None:
    Network(
        stack,
        "Network",
        max_azs=max_azs,
        nat_provider=nat_provider,
        nat_gateways=nat_gateways,
        flow_log_retention=logs.RetentionDays.THREE_MONTHS,
    )


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    return synth_stacks(
        {
            "Gateways": lambda s: _build(s, nat_provider="gateway", max_azs=2, nat_gateways=2),
            "OneGateway": lambda s: _build(s, nat_provider="gateway", max_azs=3, nat_gateways=1),
            "Instance": lambda s: _build(s, nat_provider="instance", max_azs=2, nat_gateways=2),
        },
        tmp_path_factory.mktemp("network"),
    )


def _subnets_by_tier(template: Template) -> dict[str, int]:
    tiers: dict[str, int] = {}
    for subnet in template.find_resources("AWS::EC2::Subnet").values():
        tags = {tag["Key"]: tag["Value"] for tag in subnet["Properties"]["Tags"]}
        tier = tags["aws-cdk:subnet-name"]
        tiers[tier] = tiers.get(tier, 0) + 1
    return tiers


def test_three_tiers_in_each_zone(templates: dict[str, Template]) -> None:
    assert _subnets_by_tier(templates["Gateways"]) == {"Public": 2, "Private": 2, "Isolated": 2}


def test_nat_gateway_count_follows_the_config(templates: dict[str, Template]) -> None:
    templates["Gateways"].resource_count_is("AWS::EC2::NatGateway", 2)
    templates["OneGateway"].resource_count_is("AWS::EC2::NatGateway", 1)
    templates["Instance"].resource_count_is("AWS::EC2::NatGateway", 0)


def test_isolated_subnets_have_no_default_route(templates: dict[str, Template]) -> None:
    template = templates["Gateways"]
    routes = template.find_resources("AWS::EC2::Route")

    isolated_routes = [key for key in routes if "Isolated" in key]
    private_routes = [key for key in routes if "Private" in key]
    assert isolated_routes == []
    assert len(private_routes) == 2
    assert all("NatGatewayId" in routes[key]["Properties"] for key in private_routes)


def test_nat_instance_is_a_t4g_nano_reachable_from_the_vpc_only(
    templates: dict[str, Template],
) -> None:
    template = templates["Instance"]
    instance = only(template.find_resources("AWS::EC2::Instance").values())["Properties"]
    group = only(template.find_resources("AWS::EC2::SecurityGroup").values())["Properties"]

    assert instance["InstanceType"] == "t4g.nano"
    assert instance["SourceDestCheck"] is False
    rule = only(group["SecurityGroupIngress"])
    assert rule["IpProtocol"] == "-1"
    assert rule["CidrIp"] == {"Fn::GetAtt": [rule["CidrIp"]["Fn::GetAtt"][0], "CidrBlock"]}
    assert rule["CidrIp"]["Fn::GetAtt"][0].startswith("NetworkVpc")


def test_private_subnets_route_through_the_instance(templates: dict[str, Template]) -> None:
    template = templates["Instance"]
    instance_id = only(template.find_resources("AWS::EC2::Instance"))
    routes = template.find_resources("AWS::EC2::Route")

    private = [route for key, route in routes.items() if "Private" in key]
    assert len(private) == 2
    assert all(route["Properties"]["InstanceId"] == {"Ref": instance_id} for route in private)


def test_s3_gateway_endpoint(templates: dict[str, Template]) -> None:
    endpoint = only(templates["Gateways"].find_resources("AWS::EC2::VPCEndpoint").values())

    assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"
    assert "s3" in str(endpoint["Properties"]["ServiceName"])


def test_flow_log_captures_all_traffic_into_a_retained_group(
    templates: dict[str, Template],
) -> None:
    template = templates["Gateways"]
    group_id = only(template.find_resources("AWS::Logs::LogGroup"))

    template.has_resource_properties(
        "AWS::EC2::FlowLog",
        {
            "ResourceType": "VPC",
            "TrafficType": "ALL",
            "LogDestinationType": "cloud-watch-logs",
            "LogGroupName": {"Ref": group_id},
        },
    )
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 90})
