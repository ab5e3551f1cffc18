"""The scheduler: a Lambda from the worker image that queues due runs and reaps lost ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from flow_constructs.functions import single_run_image_function

SCHEDULER_HANDLER = "worker.scheduler.handler"


class SchedulerFunction(Construct):
    """A container-image Lambda invoked every minute, never more than one at a time.

    Args:
        code: the worker image running `worker.scheduler.handler`
            (see `images.lambda_image_code`).
        environment: plain variables (e.g. LOG_LEVEL); QUEUE_URL, DEAD_LETTER_QUEUE_URL and
            DATABASE_SECRET_ARN are added from the resources given.
        queue: where due runs are queued (send).
        dead_letter_queue: read and emptied to mark dead-lettered runs failed.
        database_secret: a secret holding the database URL or the RDS JSON document.
        vpc / vpc_subnets / security_groups: attach the function to a VPC. Default: outside
            any VPC (it reaches the database and AWS APIs over the internet).
        log_retention: how long the function's log group keeps events.
        alarm_action: where the errors alarm notifies. Default: it only changes state.

    Reserved concurrency 1 keeps two invocations from queuing the same due run twice.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        code: lambda_.DockerImageCode,
        environment: Mapping[str, str],
        queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        database_secret: secretsmanager.ISecret,
        log_retention: logs.RetentionDays,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
        alarm_action: cloudwatch.IAlarmAction | None = None,
        architecture: lambda_.Architecture = lambda_.Architecture.X86_64,
    ) -> None:
        super().__init__(scope, id)

        self.log_group = logs.LogGroup(self, "LogGroup", retention=log_retention)
        # A failed minute is retried by the next invocation, not by Lambda.
        self.function = single_run_image_function(
            self,
            "Function",
            description="Flow Builder scheduler: queues due scheduled runs, reaps lost runs.",
            code=code,
            architecture=architecture,
            # Invoked every minute: a run longer than that would overlap the next one.
            timeout=Duration.seconds(55),
            environment={
                "QUEUE_URL": queue.queue_url,
                "DEAD_LETTER_QUEUE_URL": dead_letter_queue.queue_url,
                "DATABASE_SECRET_ARN": database_secret.secret_arn,
                **environment,
            },
            log_group=self.log_group,
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            security_groups=security_groups,
        )
        queue.grant_send_messages(self.function)
        dead_letter_queue.grant_consume_messages(self.function)
        database_secret.grant_read(self.function)

        self.rule = events.Rule(
            self,
            "EveryMinute",
            description="Invokes the Flow Builder scheduler every minute.",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(self.function, retry_attempts=0)],
        )

        self.errors_alarm = cloudwatch.Alarm(
            self,
            "ErrorsAlarm",
            alarm_description="The scheduler failed: scheduled runs may not be queued and "
            "lost runs may not be reaped.",
            metric=self.function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        if alarm_action is not None:
            self.errors_alarm.add_alarm_action(alarm_action)
