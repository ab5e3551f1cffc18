"""EventBridge pipe from an SQS queue to ECS RunTask: one task per queued message.

The released pipes L2 (`@aws-cdk/aws-pipes-alpha`) has no ECS target yet, so `Pipe` wraps
`aws_pipes.CfnPipe`. Its props mirror the L2 (`source`, `target`, `log_level`, ...) and the
pending `EcsTaskTarget`, so that the stack can move to the L2 by changing imports only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_pipes as pipes
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from flow_constructs.nag import acknowledge

# ECS RunTask accepts at most six capacity providers in one strategy.
_MAX_CAPACITY_PROVIDERS = 6


class PipeConfigError(ValueError):
    """A pipe was given a source, target or setting that EventBridge Pipes would reject."""


class LogLevel(Enum):
    """How much a pipe writes to its log group (same values as the L2's `LogLevel`)."""

    OFF = "OFF"
    ERROR = "ERROR"
    INFO = "INFO"
    TRACE = "TRACE"


@dataclass(frozen=True, kw_only=True)
class SqsSource:
    """A pipe source reading one SQS queue.

    Args:
        queue: the queue to read; its redrive policy is the only dead-letter handling,
            because SQS sources have no pipe-level dead-letter configuration.
        batch_size: messages per pipe execution. Default: 1, one execution per message.
    """

    queue: sqs.IQueue
    batch_size: int = 1

    @property
    def source_arn(self) -> str:
        """The ARN the pipe reads from."""
        return self.queue.queue_arn

    def source_parameters(self) -> pipes.CfnPipe.PipeSourceParametersProperty:
        """The `SourceParameters` block of the pipe."""
        return pipes.CfnPipe.PipeSourceParametersProperty(
            sqs_queue_parameters=pipes.CfnPipe.PipeSourceSqsQueueParametersProperty(
                batch_size=self.batch_size
            )
        )

    def grant_read(self, role: iam.IRole) -> None:
        """Let the pipe role receive, delete and inspect messages, and nothing more."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                resources=[self.queue.queue_arn],
            )
        )
        # Only a customer-managed key needs an IAM grant; SSE-SQS and aws/sqs do not.
        if self.queue.encryption_master_key is not None:
            self.queue.encryption_master_key.grant_decrypt(role)


@dataclass(frozen=True, kw_only=True)
class EcsTaskTarget:
    """A pipe target that starts one Fargate task per pipe execution.

    Args:
        cluster: the cluster to run in; it must have the capacity providers named in
            `capacity_provider_strategies` associated (`enable_fargate_capacity_providers`).
        task_definition: the task to run.
        container_name: the container that receives `environment`.
        capacity_provider_strategies: where tasks are placed, for example FARGATE_SPOT.
            The launch type is always omitted: ECS rejects a strategy beside a launch type.
        subnets: awsvpc subnets of the task.
        security_groups: security groups of the task. Default: the VPC's default group.
        assign_public_ip: give the task a public IP, needed in a public subnet without NAT
            to pull images and reach AWS APIs. Default: no public IP.
        environment: container environment overrides. A value that is a whole JSON path
            such as `$.body.run_id` is replaced at run time from the message body, which
            must be JSON. Default: no overrides; the overrides block is then omitted.
        platform_version: Fargate platform version. Default: LATEST, chosen by ECS.
    """

    cluster: ecs.ICluster
    task_definition: ecs.TaskDefinition
    container_name: str
    capacity_provider_strategies: Sequence[ecs.CapacityProviderStrategy]
    subnets: Sequence[ec2.ISubnet]
    security_groups: Sequence[ec2.ISecurityGroup] = ()
    assign_public_ip: bool = False
    environment: Mapping[str, str] = field(default_factory=dict)
    platform_version: ecs.FargatePlatformVersion | None = None

    @property
    def target_arn(self) -> str:
        """The ARN the pipe sends to: the cluster."""
        return self.cluster.cluster_arn

    def validate(self) -> list[str]:
        """Problems EventBridge or ECS would report at deploy or run time."""
        problems = []
        if not self.capacity_provider_strategies:
            problems.append("capacity_provider_strategies: give at least one capacity provider")
        if len(self.capacity_provider_strategies) > _MAX_CAPACITY_PROVIDERS:
            problems.append(
                f"capacity_provider_strategies: got {len(self.capacity_provider_strategies)}"
                f" entries, ECS allows at most {_MAX_CAPACITY_PROVIDERS}"
            )
        with_base = [s.capacity_provider for s in self.capacity_provider_strategies if s.base]
        if len(with_base) > 1:
            problems.append(
                f"capacity_provider_strategies: {', '.join(with_base)} all set a base;"
                " ECS allows a base on one capacity provider only"
            )
        if not self.subnets:
            problems.append("subnets: give at least one subnet")
        return problems

    def target_parameters(self) -> pipes.CfnPipe.PipeTargetParametersProperty:
        """The `TargetParameters` block; unused fields are left out rather than zeroed."""
        overrides = None
        if self.environment:
            overrides = pipes.CfnPipe.EcsTaskOverrideProperty(
                container_overrides=[
                    pipes.CfnPipe.EcsContainerOverrideProperty(
                        name=self.container_name,
                        environment=[
                            pipes.CfnPipe.EcsEnvironmentVariableProperty(name=name, value=value)
                            for name, value in self.environment.items()
                        ],
                    )
                ]
            )
        group_ids = [group.security_group_id for group in self.security_groups]
        return pipes.CfnPipe.PipeTargetParametersProperty(
            ecs_task_parameters=pipes.CfnPipe.PipeTargetEcsTaskParametersProperty(
                task_definition_arn=self.task_definition.task_definition_arn,
                task_count=1,
                capacity_provider_strategy=[
                    pipes.CfnPipe.CapacityProviderStrategyItemProperty(
                        capacity_provider=strategy.capacity_provider,
                        base=strategy.base or None,
                        weight=strategy.weight,
                    )
                    for strategy in self.capacity_provider_strategies
                ],
                network_configuration=pipes.CfnPipe.NetworkConfigurationProperty(
                    awsvpc_configuration=pipes.CfnPipe.AwsVpcConfigurationProperty(
                        subnets=[subnet.subnet_id for subnet in self.subnets],
                        security_groups=group_ids or None,
                        assign_public_ip="ENABLED" if self.assign_public_ip else "DISABLED",
                    )
                ),
                platform_version=self.platform_version.value if self.platform_version else None,
                overrides=overrides,
            )
        )

    def grant_run(self, role: iam.IRole) -> None:
        """Let the pipe role run this task family in this cluster and pass the task's roles."""
        # Any revision of the family: during an update the pipe may still start the previous
        # revision for a moment, and a denied RunTask would count as a failed receive. The
        # ARN is built from the pseudo parameters so that the finding id below never depends
        # on whether the stack has a concrete environment.
        family_pattern = f"task-definition/{self.task_definition.family}:*"
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ecs:RunTask"],
                resources=[
                    f"arn:{Aws.PARTITION}:ecs:{Aws.REGION}:{Aws.ACCOUNT_ID}:{family_pattern}"
                ],
                conditions={"ArnEquals": {"ecs:cluster": self.cluster.cluster_arn}},
            )
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:"
            f"<AWS::AccountId>:{family_pattern}]",
            "RunTask on every revision of the worker task family only, and only in this"
            " cluster: a pipe still holding the previous revision during a deploy must not"
            " fail and burn a receive of a queued run.",
        )
        # The execution role is made now if no container has needed one yet, so that a
        # container added later cannot leave the pipe unable to pass it.
        execution_role = self.task_definition.obtain_execution_role()
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.task_definition.task_role.role_arn, execution_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            )
        )


class Pipe(Construct):
    """An EventBridge pipe from an SQS source to an ECS task target, with its role and logs.

    Args:
        source: where messages come from; an ECS target needs `batch_size` 1.
        target: which task to start per message.
        log_level: what the pipe logs. Default: ERROR, failed executions only.
        log_retention: how long pipe logs are kept.
        description: shown in the console. Default: no description.

    Limitations:
        The pipe deletes a message as soon as RunTask is accepted; a task that later fails
        or is interrupted must be recovered by the application (the scheduler's reaper).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        source: SqsSource,
        target: EcsTaskTarget,
        log_retention: logs.RetentionDays,
        log_level: LogLevel = LogLevel.ERROR,
        description: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)

        problems = target.validate()
        if source.batch_size != 1:
            problems.append(
                f"batch_size: got {source.batch_size}, an ECS task target takes exactly 1"
            )
        if problems:
            raise PipeConfigError(f"pipe {self.node.path}: " + "; ".join(problems))

        # Only pipes of this account may assume the role (confused-deputy guard).
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(
                "pipes.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
        )
        source.grant_read(self.role)
        target.grant_run(self.role)

        # The /aws/vendedlogs/ prefix keeps CloudWatch Logs to one shared resource policy
        # for all vended-log deliveries, instead of one policy entry per log group.
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=f"/aws/vendedlogs/pipes/{Stack.of(self).stack_name}/{construct_id}",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )

        # No include_execution_data: message bodies and RunTask requests stay out of logs.
        self.resource = pipes.CfnPipe(
            self,
            "Resource",
            role_arn=self.role.role_arn,
            source=source.source_arn,
            source_parameters=source.source_parameters(),
            target=target.target_arn,
            target_parameters=target.target_parameters(),
            description=description,
            log_configuration=pipes.CfnPipe.PipeLogConfigurationProperty(
                level=log_level.value,
                cloudwatch_logs_log_destination=pipes.CfnPipe.CloudwatchLogsLogDestinationProperty(
                    log_group_arn=self.log_group.log_group_arn
                ),
            ),
        )
        # The role's policy must exist before the pipe validates its source and target; the
        # role itself is already a dependency through RoleArn.
        policy = self.role.node.try_find_child("DefaultPolicy")
        if policy is not None:
            self.resource.node.add_dependency(policy)

    @property
    def pipe_name(self) -> str:
        """The pipe's generated name (the resource's Ref)."""
        return self.resource.ref

    @property
    def pipe_arn(self) -> str:
        """The pipe's ARN."""
        return self.resource.attr_arn

    def metric(self, metric_name: str, *, period: Duration | None = None) -> cloudwatch.Metric:
        """A sum of one of the pipe's `AWS/EventBridge/Pipes` metrics."""
        return cloudwatch.Metric(
            namespace="AWS/EventBridge/Pipes",
            metric_name=metric_name,
            dimensions_map={"PipeName": self.pipe_name},
            statistic="Sum",
            period=period or Duration.minutes(5),
        )

    def metric_target_stage_failed(self, *, period: Duration | None = None) -> cloudwatch.Metric:
        """Executions whose RunTask call failed (no capacity, access denied, bad params)."""
        return self.metric("TargetStageFailed", period=period)

    def metric_execution_failed(self, *, period: Duration | None = None) -> cloudwatch.Metric:
        """Executions that failed at any stage."""
        return self.metric("ExecutionFailed", period=period)

    def add_target_failure_alarm(
        self, construct_id: str, *, alarm_action: cloudwatch.IAlarmAction | None = None
    ) -> cloudwatch.Alarm:
        """Alarm when any RunTask call of the pipe failed in a 5-minute period."""
        alarm = self.metric_target_stage_failed().create_alarm(
            self,
            construct_id,
            alarm_description=(
                "The pipe could not start a worker task (RunTask failed). The message is"
                " retried up to the queue's maxReceiveCount, then dead-lettered; see the"
                " pipe log group for the error."
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            # Pipes publishes no data point while nothing fails.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        if alarm_action is not None:
            alarm.add_alarm_action(alarm_action)
        return alarm
