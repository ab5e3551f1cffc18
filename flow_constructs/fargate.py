"""Fargate building blocks shared by the API service and the worker."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from flow_constructs.nag import acknowledge


def linux_task_definition(
    scope: Construct,
    id: str,
    *,
    cpu: int,
    memory_limit_mib: int,
    cpu_architecture: ecs.CpuArchitecture,
) -> ecs.FargateTaskDefinition:
    """A Fargate task definition for Linux images built for `cpu_architecture`."""
    return ecs.FargateTaskDefinition(
        scope,
        id,
        cpu=cpu,
        memory_limit_mib=memory_limit_mib,
        runtime_platform=ecs.RuntimePlatform(
            cpu_architecture=cpu_architecture,
            operating_system_family=ecs.OperatingSystemFamily.LINUX,
        ),
    )


def acknowledge_execution_role(task_definition: ecs.TaskDefinition) -> None:
    """Accept the wildcard resource of ecr:GetAuthorizationToken on the execution role."""
    acknowledge(
        task_definition.obtain_execution_role(),
        "AwsSolutions-IAM5[Resource::*]",
        "The execution role's ecr:GetAuthorizationToken has no resource-level "
        "permissions; image pulls themselves are limited to the asset repository.",
    )


def rolling_fargate_service(
    scope: Construct,
    id: str,
    *,
    cluster: ecs.ICluster,
    task_definition: ecs.FargateTaskDefinition,
    vpc_subnets: ec2.SubnetSelection,
    security_group: ec2.ISecurityGroup,
    desired_count: int | None = None,
    health_check_grace_period: Duration | None = None,
    availability_zone_rebalancing: ecs.AvailabilityZoneRebalancing | None = None,
) -> ecs.FargateService:
    """A Fargate service that starts new tasks before stopping old ones, rolling back failures.

    Args:
        desired_count: the task count a deploy sets. Default: the template sets none, so a
            deploy keeps whatever count scaling has chosen (a new service starts one task).
        health_check_grace_period: how long load balancer health checks are ignored after a
            task starts. Default: they count from the start.
        availability_zone_rebalancing: whether ECS moves tasks to even out the zones.
            Default: ECS's own setting for the account.
    """
    return ecs.FargateService(
        scope,
        id,
        cluster=cluster,
        task_definition=task_definition,
        desired_count=desired_count,
        vpc_subnets=vpc_subnets,
        security_groups=[security_group],
        circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
        min_healthy_percent=100,
        max_healthy_percent=200,
        health_check_grace_period=health_check_grace_period,
        availability_zone_rebalancing=availability_zone_rebalancing,
    )
