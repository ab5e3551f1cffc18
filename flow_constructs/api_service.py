"""The API on Fargate behind an internet-facing Application Load Balancer."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from flow_constructs.fargate import (
    acknowledge_execution_role,
    linux_task_definition,
    rolling_fargate_service,
)
from flow_constructs.nag import acknowledge

CONTAINER_PORT = 8000
HEALTH_CHECK_PATH = "/healthz"
# `python -m api` keeps idle connections 75 s, longer than this, so the load balancer always
# closes an idle connection first (the other way round gives sporadic 502s).
IDLE_TIMEOUT = Duration.seconds(60)
# The slim image has no curl: the container health check asks the app with Python itself.
CONTAINER_HEALTH_COMMAND = (
    "python -c \"import urllib.request; "
    f"urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}{HEALTH_CHECK_PATH}', "
    'timeout=3)"'
)


class ApiService(Construct):
    """The FastAPI service: ALB (HTTPS when a certificate is given), Fargate tasks, scaling.

    Args:
        cluster: the ECS cluster (in the VPC the tasks and the load balancer use).
        vpc_subnets: where the tasks run (private subnets with egress).
        image: the API image.
        cpu / memory_limit_mib / cpu_architecture: the Fargate task size and platform.
        environment: plain variables (e.g. LOG_LEVEL); QUEUE_URL is added from `queue`.
        secrets: database variables injected by ECS; API_KEYS is added from a generated
            secret (`api_keys_secret`).
        queue: the work queue, which the API may send run messages to.
        min_tasks / max_tasks: the task count range; tasks spread over the zones.
        cpu_target_percent / requests_per_task: target tracking on average CPU and on ALB
            requests per task per minute; whichever asks for more tasks wins.
        certificate_arn: an ACM certificate for HTTPS on 443 with HTTP 80 redirecting to it.
            Default: plain HTTP on port 80 (for trials without a domain).
        log_retention: how long the API's log group keeps events.
        alarm_action: where the 5xx and unhealthy-host alarms notify. Default: they only
            change state.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        cluster: ecs.ICluster,
        vpc_subnets: ec2.SubnetSelection,
        image: ecs.ContainerImage,
        cpu: int,
        memory_limit_mib: int,
        cpu_architecture: ecs.CpuArchitecture,
        environment: Mapping[str, str],
        secrets: Mapping[str, ecs.Secret],
        queue: sqs.IQueue,
        min_tasks: int,
        max_tasks: int,
        cpu_target_percent: int,
        requests_per_task: int,
        certificate_arn: str | None,
        log_retention: logs.RetentionDays,
        alarm_action: cloudwatch.IAlarmAction | None = None,
    ) -> None:
        super().__init__(scope, id)
        vpc = cluster.vpc

        self.api_keys_secret = secretsmanager.Secret(
            self,
            "ApiKeys",
            description="Flow Builder API bearer keys, comma-separated",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=48, exclude_punctuation=True
            ),
        )

        # Load balancer with access logs and strict header parsing.
        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            drop_invalid_header_fields=True,
            idle_timeout=IDLE_TIMEOUT,
        )
        self.load_balancer.log_access_logs(self.access_log_bucket, prefix="alb")

        # Task definition and service.
        self.task_definition = linux_task_definition(
            self,
            "TaskDefinition",
            cpu=cpu,
            memory_limit_mib=memory_limit_mib,
            cpu_architecture=cpu_architecture,
        )
        self.log_group = logs.LogGroup(self, "LogGroup", retention=log_retention)
        self.container = self.task_definition.add_container(
            "Api",
            image=image,
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT)],
            environment={"QUEUE_URL": queue.queue_url, **environment},
            secrets={
                **secrets,
                "API_KEYS": ecs.Secret.from_secrets_manager(self.api_keys_secret),
            },
            logging=ecs.LogDriver.aws_logs(stream_prefix="api", log_group=self.log_group),
            health_check=ecs.HealthCheck(
                command=["CMD-SHELL", CONTAINER_HEALTH_COMMAND],
                interval=Duration.seconds(15),
                timeout=Duration.seconds(5),
                retries=3,
                start_period=Duration.seconds(30),
            ),
        )
        queue.grant_send_messages(self.task_definition.task_role)
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description="Flow Builder API tasks"
        )
        self.service = rolling_fargate_service(
            self,
            "Service",
            cluster=cluster,
            task_definition=self.task_definition,
            vpc_subnets=vpc_subnets,
            security_group=self.security_group,
            desired_count=min_tasks,
            health_check_grace_period=Duration.seconds(60),
            availability_zone_rebalancing=ecs.AvailabilityZoneRebalancing.ENABLED,
        )

        # Listeners: HTTPS with a redirect when there is a certificate, else plain HTTP.
        self.target_group = elbv2.ApplicationTargetGroup(
            self,
            "TargetGroup",
            vpc=vpc,
            port=CONTAINER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            targets=[self.service],
            deregistration_delay=Duration.seconds(30),
            health_check=elbv2.HealthCheck(
                path=HEALTH_CHECK_PATH,
                interval=Duration.seconds(15),
                healthy_threshold_count=2,
                unhealthy_threshold_count=3,
            ),
        )
        if certificate_arn:
            self.listener = self.load_balancer.add_listener(
                "Https",
                port=443,
                protocol=elbv2.ApplicationProtocol.HTTPS,
                certificates=[
                    acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn)
                ],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
                default_target_groups=[self.target_group],
            )
            self.load_balancer.add_redirect(source_port=80, target_port=443)
            self.url = f"https://{self.load_balancer.load_balancer_dns_name}"
        else:
            # NOTE: without a certificate the API (and its bearer keys) travel in clear text.
            # cdk-nag 3.0.2 has no AwsSolutions rule for plain-HTTP ALB listeners, so there is
            # no finding to acknowledge; docs/standard-stack.md states the trade-off instead.
            self.listener = self.load_balancer.add_listener(
                "Http",
                port=80,
                protocol=elbv2.ApplicationProtocol.HTTP,
                default_target_groups=[self.target_group],
            )
            self.url = f"http://{self.load_balancer.load_balancer_dns_name}"

        # Scaling on CPU and on requests; scale-in is slower than scale-out.
        scaling = self.service.auto_scale_task_count(
            min_capacity=min_tasks, max_capacity=max_tasks
        )
        scaling.scale_on_cpu_utilization(
            "CpuScaling",
            target_utilization_percent=cpu_target_percent,
            scale_in_cooldown=Duration.minutes(5),
            scale_out_cooldown=Duration.minutes(1),
        )
        scaling.scale_on_request_count(
            "RequestScaling",
            requests_per_target=requests_per_task,
            target_group=self.target_group,
            scale_in_cooldown=Duration.minutes(5),
            scale_out_cooldown=Duration.minutes(1),
        )

        self._add_alarms(alarm_action)
        self._acknowledge_findings()

    def _acknowledge_findings(self) -> None:
        acknowledge(
            self.api_keys_secret,
            "AwsSolutions-SMG4",
            "API keys are handed to clients out of band; rotating them automatically would "
            "lock clients out. Operators change the secret and redeploy the API.",
        )
        acknowledge(
            self.access_log_bucket,
            "AwsSolutions-S1",
            "This bucket only receives the load balancer's access logs; logging access to "
            "it would need another bucket for little value (it is private and TLS-only).",
        )
        acknowledge(
            self.load_balancer,
            "AwsSolutions-EC23",
            "The API is public: its load balancer accepts HTTP(S) from anywhere and every "
            "request except the health checks needs an API key.",
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "Only non-secret settings (QUEUE_URL, LOG_LEVEL) are plain environment "
            "variables; database credentials and API keys are ECS secrets.",
        )
        acknowledge_execution_role(self.task_definition)

    def _add_alarms(self, alarm_action: cloudwatch.IAlarmAction | None) -> None:
        five_minutes = Duration.minutes(5)
        # 5xx from the tasks plus 5xx the load balancer answers itself (502/503/504 when
        # no task is healthy or a task drops the connection).
        server_errors = cloudwatch.MathExpression(
            expression="FILL(fromTasks, 0) + FILL(fromBalancer, 0)",
            label="API 5xx responses",
            period=five_minutes,
            using_metrics={
                "fromTasks": self.target_group.metrics.http_code_target(
                    elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=five_minutes
                ),
                "fromBalancer": self.load_balancer.metrics.http_code_elb(
                    elbv2.HttpCodeElb.ELB_5XX_COUNT, period=five_minutes
                ),
            },
        )
        self.server_errors_alarm = cloudwatch.Alarm(
            self,
            "ServerErrorsAlarm",
            alarm_description="The API answered 10 or more 5xx responses in 5 minutes.",
            metric=server_errors,
            threshold=10,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.unhealthy_hosts_alarm = cloudwatch.Alarm(
            self,
            "UnhealthyHostsAlarm",
            alarm_description="API tasks failed the load balancer health check for 3 minutes.",
            metric=self.target_group.metrics.unhealthy_host_count(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=3,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.alarms: tuple[cloudwatch.Alarm, ...] = (
            self.server_errors_alarm,
            self.unhealthy_hosts_alarm,
        )
        if alarm_action is not None:
            for alarm in self.alarms:
                alarm.add_alarm_action(alarm_action)
