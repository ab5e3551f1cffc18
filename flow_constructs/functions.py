"""Container-image Lambda functions shared by the scheduler and the deploy-time migrations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from flow_constructs.nag import acknowledge_execution_policies


def single_run_image_function(
    scope: Construct,
    id: str,
    *,
    description: str,
    code: lambda_.DockerImageCode,
    architecture: lambda_.Architecture,
    timeout: Duration,
    environment: Mapping[str, str],
    log_group: logs.ILogGroup,
    vpc: ec2.IVpc | None,
    vpc_subnets: ec2.SubnetSelection | None,
    security_groups: Sequence[ec2.ISecurityGroup] | None,
) -> lambda_.DockerImageFunction:
    """A 512 MiB image function that runs one invocation at a time and Lambda never retries.

    Args:
        vpc / vpc_subnets / security_groups: attach the function to a VPC. With `vpc` None
            the function runs outside any VPC.

    The AWS managed execution policies on the function's role are acknowledged for cdk-nag.
    """
    function = lambda_.DockerImageFunction(
        scope,
        id,
        description=description,
        code=code,
        architecture=architecture,
        memory_size=512,
        timeout=timeout,
        reserved_concurrent_executions=1,
        retry_attempts=0,
        environment=dict(environment),
        vpc=vpc,
        vpc_subnets=vpc_subnets,
        security_groups=list(security_groups) if security_groups else None,
        log_group=log_group,
    )
    acknowledge_execution_policies(function, in_vpc=vpc is not None)
    return function
