"""StandardStack: the production deployment in its own VPC with RDS, an ALB and autoscaling."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from flow_constructs.api_service import ApiService
from flow_constructs.database import Database
from flow_constructs.images import ServiceImages, container_image, lambda_image_code
from flow_constructs.migrations import MIGRATIONS_HANDLER, DeployTimeMigrations
from flow_constructs.monitoring import AlarmTopic, OperationsDashboard
from flow_constructs.network import Network
from flow_constructs.scheduler import SCHEDULER_HANDLER, SchedulerFunction
from flow_constructs.work_queue import WorkQueue
from flow_constructs.worker_service import WorkerService
from flow_constructs.worker_task import WorkerTaskDefinition
from stacks.config import StandardConfig


class StandardStack(Stack):
    """VPC, RDS PostgreSQL, the API behind an ALB, the queue-scaled worker, the scheduler."""

    def __init__(
        self, scope: Construct, id: str, *, config: StandardConfig, **kwargs: Any
    ) -> None:
        super().__init__(
            scope,
            id,
            description="Flow Builder: API, worker and scheduler on Fargate/Lambda with RDS",
            **kwargs,
        )
        self.config = config
        self.common_env = {"LOG_LEVEL": config.log_level}

        # Foundations every service uses.
        self.alarms = AlarmTopic(self, "Alarms", email=config.alarm_email)
        self.network = Network(
            self,
            "Network",
            max_azs=config.max_azs,
            nat_provider=config.nat_provider,
            nat_gateways=config.nat_gateways,
            flow_log_retention=config.flow_log_retention,
        )
        self.images = ServiceImages(self, "Images")
        self.database = self._database()
        self.work_queue = self._work_queue()
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=self.network.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )

        # The services, then the functions; migrations run before all of them.
        self.api = self._api()
        self.worker = self._worker()
        self.scheduler = self._scheduler()
        self._migrations()

        self.dashboard = self._dashboard()
        CfnOutput(
            self, "ApiUrl", value=self.api.url, description="Base URL of the Flow Builder API"
        )
        CfnOutput(
            self, "QueueUrl", value=self.work_queue.queue.queue_url, description="The work queue"
        )
        CfnOutput(
            self,
            "DashboardName",
            value=self.dashboard.dashboard.dashboard_name,
            description="CloudWatch dashboard of the deployment",
        )

    def _database(self) -> Database:
        config = self.config
        return Database(
            self,
            "Database",
            vpc=self.network.vpc,
            vpc_subnets=self.network.isolated_subnets,
            instance_type=config.database_instance_type,
            allocated_storage_gib=config.database_allocated_storage_gib,
            max_allocated_storage_gib=config.database_max_allocated_storage_gib,
            multi_az=config.database_multi_az,
            deletion_protection=config.database_deletion_protection,
            snapshot_on_delete=config.database_snapshot_on_delete,
            backup_retention=Duration.days(config.database_backup_retention_days),
            alarm_action=self.alarms.action,
        )

    def _work_queue(self) -> WorkQueue:
        config = self.config
        return WorkQueue(
            self,
            "WorkQueue",
            visibility_timeout=Duration.seconds(config.queue_visibility_timeout_seconds),
            max_receive_count=config.queue_max_receive_count,
            oldest_message_age_threshold=Duration.minutes(
                config.queue_oldest_message_alarm_minutes
            ),
            alarm_action=self.alarms.action,
        )

    def _api(self) -> ApiService:
        config = self.config
        api = ApiService(
            self,
            "Api",
            cluster=self.cluster,
            vpc_subnets=self.network.private_subnets,
            image=container_image(self.images.api),
            cpu=config.api_cpu,
            memory_limit_mib=config.api_memory_mib,
            cpu_architecture=self.images.cpu_architecture,
            environment=self.common_env,
            secrets=self.database.ecs_secrets(),
            queue=self.work_queue.queue,
            min_tasks=config.api_min_tasks,
            max_tasks=config.api_max_tasks,
            cpu_target_percent=config.api_cpu_target_percent,
            requests_per_task=config.api_requests_per_task,
            certificate_arn=config.certificate_arn,
            log_retention=config.log_retention,
            alarm_action=self.alarms.action,
        )
        self.database.allow_from(api.security_group, "PostgreSQL from the API")
        return api

    def _worker(self) -> WorkerService:
        config = self.config
        worker_task = WorkerTaskDefinition(
            self,
            "WorkerTask",
            image=container_image(self.images.worker),
            cpu=config.worker_cpu,
            memory_limit_mib=config.worker_memory_mib,
            cpu_architecture=self.images.cpu_architecture,
            environment={
                **self.common_env,
                "WORKER_CONCURRENCY": str(config.worker_concurrency),
            },
            secrets=self.database.ecs_secrets(),
            log_retention=config.log_retention,
            queue=self.work_queue.queue,
        )
        worker = WorkerService(
            self,
            "Worker",
            cluster=self.cluster,
            vpc_subnets=self.network.private_subnets,
            worker_task=worker_task,
            queue=self.work_queue.queue,
            max_tasks=config.worker_max_tasks,
            runs_per_task=config.worker_concurrency,
            scale_in_after=Duration.minutes(config.worker_scale_in_minutes),
        )
        self.database.allow_from(worker.security_group, "PostgreSQL from the worker")
        return worker

    def _scheduler(self) -> SchedulerFunction:
        group = ec2.SecurityGroup(
            self,
            "SchedulerSecurityGroup",
            vpc=self.network.vpc,
            description="Flow Builder scheduler",
        )
        self.database.allow_from(group, "PostgreSQL from the scheduler")
        return SchedulerFunction(
            self,
            "Scheduler",
            code=lambda_image_code(self.images.worker, cmd=[SCHEDULER_HANDLER]),
            architecture=self.images.lambda_architecture,
            environment=self.common_env,
            queue=self.work_queue.queue,
            dead_letter_queue=self.work_queue.dead_letter_queue,
            database_secret=self.database.secret,
            vpc=self.network.vpc,
            vpc_subnets=self.network.private_subnets,
            security_groups=[group],
            log_retention=self.config.log_retention,
            alarm_action=self.alarms.action,
        )

    def _migrations(self) -> DeployTimeMigrations:
        group = ec2.SecurityGroup(
            self,
            "MigrationsSecurityGroup",
            vpc=self.network.vpc,
            description="Flow Builder migrations",
        )
        self.database.allow_from(group, "PostgreSQL from the migrations")
        return DeployTimeMigrations(
            self,
            "Migrations",
            code=lambda_image_code(self.images.worker, cmd=[MIGRATIONS_HANDLER]),
            architecture=self.images.lambda_architecture,
            environment=self.common_env,
            database_secret=self.database.secret,
            vpc=self.network.vpc,
            vpc_subnets=self.network.private_subnets,
            security_groups=[group],
            log_retention=self.config.log_retention,
            # The database and its ingress rules come first; every user of the schema waits.
            execute_after=[self.database],
            execute_before=[self.api.service, self.worker.service, self.scheduler.function],
        )

    def _dashboard(self) -> OperationsDashboard:
        return OperationsDashboard(
            self,
            "Dashboard",
            queue=self.work_queue.queue,
            dead_letter_queue=self.work_queue.dead_letter_queue,
            worker_service=self.worker.service,
            load_balancer=self.api.load_balancer,
            target_group=self.api.target_group,
            database=self.database.instance,
            scheduler=self.scheduler.function,
            alarms=[
                *self.work_queue.alarms,
                *self.api.alarms,
                *self.database.alarms,
                self.scheduler.errors_alarm,
            ],
        )
