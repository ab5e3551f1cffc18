"""The always-deployed worker service of StandardStack, scaled by its queue."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from flow_constructs.fargate import rolling_fargate_service
from flow_constructs.worker_scaling import QueueDrivenScaling
from flow_constructs.worker_task import WorkerTaskDefinition


class WorkerService(Construct):
    """A Fargate service running the worker task, between 0 and `max_tasks` tasks.

    Args:
        cluster: the ECS cluster.
        vpc_subnets: where the tasks run (private subnets with egress).
        worker_task: the worker task definition (see `worker_task`).
        queue: the work queue that drives the scaling.
        max_tasks / runs_per_task / scale_in_after: see `QueueDrivenScaling`.

    The desired count is left to the scaling (not set in the template), so a deploy does not
    reset it; a new service starts with one task, which the queue-empty alarm stops.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        cluster: ecs.ICluster,
        vpc_subnets: ec2.SubnetSelection,
        worker_task: WorkerTaskDefinition,
        queue: sqs.IQueue,
        max_tasks: int,
        runs_per_task: int,
        scale_in_after: Duration,
    ) -> None:
        super().__init__(scope, id)

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=cluster.vpc,
            description="Flow Builder worker tasks: outbound only",
        )
        # Old tasks keep working on their runs while new ones start.
        self.service = rolling_fargate_service(
            self,
            "Service",
            cluster=cluster,
            task_definition=worker_task.task_definition,
            vpc_subnets=vpc_subnets,
            security_group=self.security_group,
        )
        self.scaling = QueueDrivenScaling(
            self,
            "Scaling",
            service=self.service,
            queue=queue,
            max_tasks=max_tasks,
            runs_per_task=runs_per_task,
            scale_in_after=scale_in_after,
        )
