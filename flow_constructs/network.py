"""StandardStack's own VPC: public, private-with-egress and isolated subnets over 2-3 AZs."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from flow_constructs.nag import acknowledge

PUBLIC = ec2.SubnetType.PUBLIC
PRIVATE = ec2.SubnetType.PRIVATE_WITH_EGRESS
ISOLATED = ec2.SubnetType.PRIVATE_ISOLATED


class Network(Construct):
    """A new VPC with NAT for the private subnets, an S3 endpoint and flow logs.

    Args:
        max_azs: availability zones to spread subnets over (2 or 3).
        nat_provider: "gateway" for managed NAT gateways, or "instance" for one t4g.nano NAT
            instance (Amazon Linux 2023): cheaper, but a single unmonitored EC2 instance that
            is not replaced if it stops.
        nat_gateways: NAT gateways to create when `nat_provider` is "gateway"; fewer than
            `max_azs` routes some zones through another zone's gateway.
        flow_log_retention: how long the flow log group keeps records of all traffic.

    Subnets: public (load balancer, NAT), private with egress (tasks, functions) and isolated
    (database; no route to the internet at all).
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        max_azs: int,
        nat_provider: str,
        nat_gateways: int,
        flow_log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, id)

        nat_instance: ec2.NatInstanceProviderV2 | None = None
        if nat_provider == "instance":
            nat_instance = ec2.NatProvider.instance_v2(
                instance_type=ec2.InstanceType("t4g.nano"),
                machine_image=ec2.MachineImage.latest_amazon_linux2023(
                    cpu_type=ec2.AmazonLinuxCpuType.ARM_64
                ),
                associate_public_ip_address=True,
                # Inbound is opened below to the VPC only, not to the internet.
                default_allowed_traffic=ec2.NatTrafficDirection.OUTBOUND_ONLY,
            )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=max_azs,
            nat_gateway_provider=nat_instance or ec2.NatProvider.gateway(),
            nat_gateways=1 if nat_instance else nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="Public", subnet_type=PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="Private", subnet_type=PRIVATE, cidr_mask=22),
                ec2.SubnetConfiguration(name="Isolated", subnet_type=ISOLATED, cidr_mask=24),
            ],
            # Image layers come from S3: the endpoint keeps that traffic off the NAT bill.
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
        )
        if nat_instance is not None:
            nat_instance.connections.allow_from(
                ec2.Peer.ipv4(self.vpc.vpc_cidr_block),
                ec2.Port.all_traffic(),
                "NAT for the VPC's private subnets",
            )
            self._acknowledge_nat_instance(nat_instance)

        self.flow_log_group = logs.LogGroup(self, "FlowLogGroup", retention=flow_log_retention)
        self.flow_log = self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

    def _acknowledge_nat_instance(self, nat_instance: ec2.NatInstanceProviderV2) -> None:
        instances = [c for c in self.vpc.node.find_all() if isinstance(c, ec2.Instance)]
        reasons = {
            "AwsSolutions-EC26": "The NAT instance's root volume holds only the AMI and "
            "forwards traffic without storing it; the cost option accepts an unencrypted "
            "root volume over a custom block device mapping.",
            "AwsSolutions-EC28": "Detailed monitoring costs more than the t4g.nano itself; "
            "natProvider=instance is the cost option, basic 5-minute metrics remain.",
            "AwsSolutions-EC29": "The NAT instance is owned by CloudFormation and replaced by "
            "a deploy; termination protection would block stack updates that replace it.",
        }
        for instance in instances:
            for finding_id, reason in reasons.items():
                acknowledge(instance, finding_id, reason)
        for group in nat_instance.connections.security_groups:
            acknowledge(
                group,
                "AwsSolutions-EC23",
                "The NAT security group admits the VPC's own CIDR block (an intrinsic the "
                "rule cannot evaluate), not 0.0.0.0/0.",
            )

    @property
    def private_subnets(self) -> ec2.SubnetSelection:
        """Where tasks and functions run."""
        return ec2.SubnetSelection(subnet_type=PRIVATE)

    @property
    def isolated_subnets(self) -> ec2.SubnetSelection:
        """Where the database runs."""
        return ec2.SubnetSelection(subnet_type=ISOLATED)
