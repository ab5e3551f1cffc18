"""The worker's Fargate task definition, shared by the worker service and the pipe."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Aws, Duration
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from flow_constructs.fargate import acknowledge_execution_role, linux_task_definition
from flow_constructs.nag import acknowledge

# Fargate Spot gives a task at most 120 s between SIGTERM and SIGKILL; on-demand tasks get
# the same, so the worker's drain logic has one budget everywhere.
STOP_TIMEOUT = Duration.seconds(120)


class WorkerTaskDefinition(Construct):
    """A Fargate task definition running `python -m worker` against the work queue.

    Args:
        image: the worker image.
        cpu / memory_limit_mib: the Fargate task size.
        cpu_architecture: must match the architecture the image is built for.
        environment: plain, non-secret variables (e.g. LOG_LEVEL, WORKER_CONCURRENCY);
            QUEUE_URL is added from `queue`.
        secrets: variables injected by ECS from Secrets Manager (database credentials).
        log_retention: how long the worker's log group keeps events.
        queue: the work queue; the task role may receive, delete, change the visibility of
            and send messages (the worker re-queues a run it releases on SIGTERM).
        command: the container command. Default: the image's `python -m worker`.

    The task role may also turn ECS task scale-in protection on and off, which the worker
    does through the ECS agent endpoint while it holds a run.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        image: ecs.ContainerImage,
        cpu: int,
        memory_limit_mib: int,
        cpu_architecture: ecs.CpuArchitecture,
        environment: Mapping[str, str],
        secrets: Mapping[str, ecs.Secret],
        log_retention: logs.RetentionDays,
        queue: sqs.IQueue,
        command: Sequence[str] | None = None,
    ) -> None:
        super().__init__(scope, id)

        self.task_definition = linux_task_definition(
            self,
            "TaskDefinition",
            cpu=cpu,
            memory_limit_mib=memory_limit_mib,
            cpu_architecture=cpu_architecture,
        )
        self.log_group = logs.LogGroup(self, "LogGroup", retention=log_retention)
        self.container = self.task_definition.add_container(
            "Worker",
            image=image,
            command=list(command) if command else None,
            environment={"QUEUE_URL": queue.queue_url, **environment},
            secrets=dict(secrets),
            logging=ecs.LogDriver.aws_logs(stream_prefix="worker", log_group=self.log_group),
            stop_timeout=STOP_TIMEOUT,
            essential=True,
        )

        task_role = self.task_definition.task_role
        queue.grant_consume_messages(task_role)
        queue.grant_send_messages(task_role)
        # Task ARNs are only known at run time, so the grant covers this account's and
        # region's tasks; the agent endpoint only ever acts on the calling task.
        task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
                resources=[f"arn:{Aws.PARTITION}:ecs:{Aws.REGION}:{Aws.ACCOUNT_ID}:task/*"],
            )
        )

        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "Only non-secret settings (QUEUE_URL, LOG_LEVEL, WORKER_*) are plain environment "
            "variables; database credentials are ECS secrets from Secrets Manager.",
        )
        acknowledge_execution_role(self.task_definition)
        acknowledge(
            task_role,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:"
            "<AWS::AccountId>:task/*]",
            "Task ARNs exist only at run time, so task protection is granted on this "
            "account's tasks in the region; the ECS agent only acts for the calling task.",
        )
