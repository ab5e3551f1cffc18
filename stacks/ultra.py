"""UltraStack: SQS -> EventBridge Pipes -> Fargate Spot in an existing VPC, nothing idle-billed.

No VPC, NAT, load balancer, database or always-running service is created: the queue feeds
a pipe that starts one Fargate Spot task per run in a public subnet of the user's VPC, the
scheduler and the API are Lambdas outside the VPC, and the database is external.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import (
    Annotations,
    CfnOutput,
    Duration,
    RemovalPolicy,
    SecretValue,
    Stack,
)
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct, IConstruct

from flow_constructs.api_function import ApiFunction
from flow_constructs.images import ServiceImages, container_image, lambda_image_code
from flow_constructs.migrations import MIGRATIONS_HANDLER, DeployTimeMigrations
from flow_constructs.monitoring import AlarmTopic
from flow_constructs.nag import acknowledge
from flow_constructs.pipe import EcsTaskTarget, Pipe, SqsSource
from flow_constructs.scheduler import SCHEDULER_HANDLER, SchedulerFunction
from flow_constructs.spot_interruptions import SpotInterruptionMonitor
from flow_constructs.work_queue import WorkQueue
from flow_constructs.worker_task import WorkerTaskDefinition
from stacks.ultra_config import UltraConfig

API_HANDLER = "api.lambda_handler.handler"

# Shown in the secret until the user puts the real URL in; the services refuse it by name.
DATABASE_URL_PLACEHOLDER = "not-set: put the postgresql:// URL of the database here"

SPOT_ARM64_WARNING = "@flow-builder/ultra:spotArm64"


class UltraStack(Stack):
    """The cost-optimized deployment of Flow Builder (issue 5); see docs/ultra-stack.md."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: UltraConfig, **kwargs: Any
    ) -> None:
        kwargs.setdefault(
            "description",
            "Flow Builder, cost-optimized: SQS -> EventBridge Pipes -> Fargate Spot in an"
            " existing VPC, Lambda API and scheduler, external database",
        )
        super().__init__(scope, construct_id, **kwargs)
        self.config = config

        self.alarm_topic = AlarmTopic(self, "Alarms", email=config.alarm_email)
        alarm_action = self.alarm_topic.action
        images = ServiceImages(self, "Images", cpu_architecture=config.cpu_architecture_name)
        if config.arm64:
            Annotations.of(self).add_warning_v2(
                SPOT_ARM64_WARNING,
                "ultra.cpuArchitecture is ARM64: AWS documents disagree on whether Fargate"
                " Spot runs ARM64 tasks, and support differs by region. If RunTask fails,"
                " the pipe target-failure alarm fires; set ultra.onDemandWeight or X86_64.",
            )

        self.work_queue = WorkQueue(
            self,
            "WorkQueue",
            visibility_timeout=Duration.seconds(config.queue_visibility_timeout_seconds),
            max_receive_count=config.queue_max_receive_count,
            oldest_message_age_threshold=Duration.minutes(
                config.queue_oldest_message_alarm_minutes
            ),
            alarm_action=alarm_action,
        )
        self.database_secret = self._database_secret()

        # The existing VPC, by attributes only: synth needs no account lookup.
        vpc = ec2.Vpc.from_vpc_attributes(
            self,
            "Vpc",
            vpc_id=config.vpc_id,
            availability_zones=[config.worker_availability_zone],
        )
        subnet = ec2.Subnet.from_subnet_attributes(
            self,
            "WorkerSubnet",
            subnet_id=config.worker_subnet_id,
            availability_zone=config.worker_availability_zone,
        )
        Annotations.of(subnet).acknowledge_warning(
            "@aws-cdk/aws-ec2:noSubnetRouteTableId",
            "The stack only places tasks in the subnet; it never reads its route table.",
        )
        self.cluster = ecs.Cluster(self, "Cluster", vpc=vpc, enable_fargate_capacity_providers=True)

        worker_environment = {"LOG_LEVEL": config.log_level}
        worker_secrets: dict[str, ecs.Secret] = {}
        if self._database_secret_arn_is_complete():
            worker_secrets["DATABASE_URL"] = ecs.Secret.from_secrets_manager(self.database_secret)
        else:
            # ECS resolves a secret reliably only by its complete ARN; given a name (or a
            # partial ARN) the worker reads the secret at start itself, as the Lambdas do.
            worker_environment["DATABASE_SECRET_ARN"] = config.database_secret or ""
        self.worker = WorkerTaskDefinition(
            self,
            "Worker",
            image=container_image(images.worker),
            cpu=config.worker_cpu,
            memory_limit_mib=config.worker_memory_mib,
            cpu_architecture=images.cpu_architecture,
            environment=worker_environment,
            secrets=worker_secrets,
            log_retention=config.log_retention,
            queue=self.work_queue.queue,
        )
        if not worker_secrets:
            self.database_secret.grant_read(self.worker.task_definition.task_role)
        self.worker_security_group = ec2.SecurityGroup(
            self,
            "WorkerSecurityGroup",
            vpc=vpc,
            description="Flow Builder worker tasks: outbound only, no inbound",
            allow_all_outbound=True,
        )

        self.pipe = Pipe(
            self,
            "WorkerPipe",
            description="Starts one Flow Builder worker task per queued run",
            source=SqsSource(queue=self.work_queue.queue, batch_size=1),
            target=EcsTaskTarget(
                cluster=self.cluster,
                task_definition=self.worker.task_definition,
                container_name=self.worker.container.container_name,
                capacity_provider_strategies=self._capacity_provider_strategies(),
                subnets=[subnet],
                security_groups=[self.worker_security_group],
                # A public subnet without NAT: the public IP reaches ECR, SQS, the database.
                assign_public_ip=True,
                environment={"RUN_ID": "$.body.run_id"},
            ),
            log_retention=config.log_retention,
        )
        self.pipe.add_target_failure_alarm("TargetFailureAlarm", alarm_action=alarm_action)
        self.spot_interruptions = SpotInterruptionMonitor(
            self,
            "SpotInterruptions",
            cluster=self.cluster,
            log_retention=config.log_retention,
            alarm_action=alarm_action,
        )

        self.scheduler = SchedulerFunction(
            self,
            "Scheduler",
            code=lambda_image_code(images.worker, cmd=[SCHEDULER_HANDLER]),
            architecture=images.lambda_architecture,
            environment={"LOG_LEVEL": config.log_level},
            queue=self.work_queue.queue,
            dead_letter_queue=self.work_queue.dead_letter_queue,
            database_secret=self.database_secret,
            log_retention=config.log_retention,
            alarm_action=alarm_action,
        )

        self.api: ApiFunction | None = None
        if config.api == "lambda":
            self.api = ApiFunction(
                self,
                "Api",
                code=lambda_image_code(images.api, cmd=[API_HANDLER]),
                architecture=images.lambda_architecture,
                queue=self.work_queue.queue,
                database_secret=self.database_secret,
                log_retention=config.log_retention,
                environment={"LOG_LEVEL": config.log_level},
            )

        self.migrations: DeployTimeMigrations | None = None
        if config.database_secret is not None:
            # Nothing may start a run or serve a request on a schema older than the code.
            before: list[IConstruct] = [self.pipe, self.scheduler]
            if self.api is not None:
                before.append(self.api)
            self.migrations = DeployTimeMigrations(
                self,
                "Migrations",
                code=lambda_image_code(images.worker, cmd=[MIGRATIONS_HANDLER]),
                architecture=images.lambda_architecture,
                environment={"LOG_LEVEL": config.log_level},
                database_secret=self.database_secret,
                execute_before=before,
                log_retention=config.log_retention,
            )

        self._outputs()
        self._acknowledge_findings()

    def _database_secret(self) -> secretsmanager.ISecret:
        """The external database's URL secret: the configured one, or a new one to fill."""
        configured = self.config.database_secret
        if configured is None:
            # Retained so that pointing ultra.databaseSecret at it later keeps the value.
            self.database_secret_name = f"{self.stack_name}/database-url"
            secret = secretsmanager.Secret(
                self,
                "DatabaseUrl",
                secret_name=self.database_secret_name,
                description="postgresql:// URL of the external Flow Builder database",
                secret_string_value=SecretValue.unsafe_plain_text(DATABASE_URL_PLACEHOLDER),
                removal_policy=RemovalPolicy.RETAIN,
            )
            return secret
        if not self.config.database_secret_is_arn:
            return secretsmanager.Secret.from_secret_name_v2(self, "DatabaseUrl", configured)
        if _has_random_suffix(configured):
            return secretsmanager.Secret.from_secret_complete_arn(self, "DatabaseUrl", configured)
        return secretsmanager.Secret.from_secret_partial_arn(self, "DatabaseUrl", configured)

    def _database_secret_arn_is_complete(self) -> bool:
        """Whether the secret is known by its complete ARN (created here, or configured so)."""
        configured = self.config.database_secret
        return configured is None or (
            self.config.database_secret_is_arn and _has_random_suffix(configured)
        )

    def _capacity_provider_strategies(self) -> list[ecs.CapacityProviderStrategy]:
        """FARGATE_SPOT, plus on-demand FARGATE when a base or weight is configured."""
        strategies = [ecs.CapacityProviderStrategy(capacity_provider="FARGATE_SPOT", weight=1)]
        if self.config.on_demand_base or self.config.on_demand_weight:
            strategies.append(
                ecs.CapacityProviderStrategy(
                    capacity_provider="FARGATE",
                    base=self.config.on_demand_base or None,
                    weight=self.config.on_demand_weight,
                )
            )
        return strategies

    def _outputs(self) -> None:
        if self.api is not None:
            CfnOutput(self, "ApiUrl", value=self.api.url.url, description="Flow Builder API URL")
        CfnOutput(
            self,
            "QueueUrl",
            value=self.work_queue.queue.queue_url,
            description="Work queue; each message starts one worker task",
        )
        if self.config.database_secret is None:
            CfnOutput(
                self,
                "DatabaseSecretArn",
                value=self.database_secret.secret_arn,
                description="Set ultra.databaseSecret to this ARN once the secret holds the URL",
            )
            CfnOutput(
                self,
                "DatabaseSecretName",
                # The literal name: the secret's own attribute is parsed back out of its ARN.
                value=self.database_secret_name,
                description=(
                    "Put the database URL into this secret: aws secretsmanager"
                    " put-secret-value --secret-id <this name> --secret-string"
                    " postgresql://USER:PASSWORD@HOST:5432/DB ; then set"
                    " ultra.databaseSecret to the DatabaseSecretArn output and deploy again"
                    " to run the migrations."
                ),
            )

    def _acknowledge_findings(self) -> None:
        """cdk-nag findings that are UltraStack's trade-offs, one reason per finding."""
        acknowledge(
            self.cluster,
            "AwsSolutions-ECS4",
            "Container Insights is off: UltraStack keeps to basic monitoring to stay near $0"
            " when idle; StandardStack turns it on.",
        )
        acknowledge(
            self.alarm_topic.topic,
            "AwsSolutions-SNS2",
            "Alarm topic without SSE: CloudWatch alarms cannot publish to a topic encrypted"
            " with the AWS-managed key, and a customer key costs $1/month; alarms carry no"
            " secrets.",
        )
        if self.config.database_secret is None:
            acknowledge(
                self.database_secret,
                "AwsSolutions-SMG4",
                "The database URL belongs to an external database whose password this stack"
                " cannot change; rotate it at the provider and update the secret.",
            )


def _has_random_suffix(arn: str) -> bool:
    """Whether a secret ARN ends with the 6-character suffix Secrets Manager appends."""
    name = arn.split(":secret:", 1)[1]
    return len(name) > 7 and name[-7] == "-" and name[-6:].isalnum()
