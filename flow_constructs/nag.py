"""Acknowledging cdk-nag findings: one finding per call, always with the trade-off."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_lambda as lambda_
from constructs import IConstruct


def acknowledge(scope: IConstruct, finding_id: str, reason: str) -> None:
    """Accept the finding `finding_id` on `scope` and its children, giving the reason."""
    Validations.of(scope).acknowledge(Acknowledgment(id=finding_id, reason=reason))

# The AWS managed execution policies grant only log writing (and, in a VPC, managing the
# function's network interfaces), which is exactly what every function needs.
BASIC_EXECUTION = (
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AWSLambdaBasicExecutionRole]"
)
VPC_EXECUTION = (
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AWSLambdaVPCAccessExecutionRole]"
)


def acknowledge_execution_policies(function: lambda_.Function, *, in_vpc: bool) -> None:
    """Accept the AWS managed execution policies Lambda attaches to `function`'s role."""
    acknowledge(
        function,
        BASIC_EXECUTION,
        "AWSLambdaBasicExecutionRole only allows writing the function's logs; an inline "
        "copy would have to follow AWS's changes by hand.",
    )
    if in_vpc:
        acknowledge(
            function,
            VPC_EXECUTION,
            "AWSLambdaVPCAccessExecutionRole only allows managing the network interfaces a "
            "VPC function needs; the actions do not support resource-level scoping.",
        )
