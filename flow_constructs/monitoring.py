"""Alarm notifications and the operations dashboard."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

PERIOD = Duration.minutes(1)


class AlarmTopic(Construct):
    """The SNS topic every alarm notifies, with an optional email subscription.

    Args:
        email: an address to subscribe (it must confirm the subscription). Default: no
            subscription; subscribe a pager or chat integration to `topic` yourself.
    """

    def __init__(self, scope: Construct, id: str, *, email: str | None = None) -> None:
        super().__init__(scope, id)

        self.topic = sns.Topic(self, "Topic", display_name="Flow Builder alarms", enforce_ssl=True)
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        self.action = cw_actions.SnsAction(self.topic)


class OperationsDashboard(Construct):
    """A CloudWatch dashboard: queue, workers, API, database, scheduler, and every alarm.

    Worker task counts come from Container Insights, which the cluster must enable.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        worker_service: ecs.FargateService,
        load_balancer: elbv2.ApplicationLoadBalancer,
        target_group: elbv2.ApplicationTargetGroup,
        database: rds.DatabaseInstance,
        scheduler: lambda_.IFunction,
        alarms: Sequence[cloudwatch.IAlarm],
    ) -> None:
        super().__init__(scope, id)

        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", default_interval=Duration.hours(3)
        )
        self.dashboard.add_widgets(
            *self._queue_widgets(queue, dead_letter_queue, worker_service),
        )
        self.dashboard.add_widgets(*self._api_widgets(load_balancer, target_group))
        self.dashboard.add_widgets(*self._database_widgets(database))
        self.dashboard.add_widgets(*self._scheduler_widgets(scheduler))
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=24)
        )

    @staticmethod
    def _queue_widgets(
        queue: sqs.IQueue, dead_letter_queue: sqs.IQueue, worker_service: ecs.FargateService
    ) -> list[cloudwatch.IWidget]:
        insights = {
            "ClusterName": worker_service.cluster.cluster_name,
            "ServiceName": worker_service.service_name,
        }
        return [
            cloudwatch.GraphWidget(
                title="Queue depth",
                left=[
                    queue.metric_approximate_number_of_messages_visible(
                        period=PERIOD, statistic="Maximum", label="Waiting"
                    ),
                    queue.metric_approximate_number_of_messages_not_visible(
                        period=PERIOD, statistic="Maximum", label="In progress"
                    ),
                    dead_letter_queue.metric_approximate_number_of_messages_visible(
                        period=PERIOD, statistic="Maximum", label="Dead-lettered"
                    ),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Oldest waiting run (s)",
                left=[
                    queue.metric_approximate_age_of_oldest_message(
                        period=PERIOD, statistic="Maximum", label="Age"
                    )
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Worker tasks",
                left=[
                    cloudwatch.Metric(
                        namespace="ECS/ContainerInsights",
                        metric_name=name,
                        dimensions_map=insights,
                        period=PERIOD,
                        statistic="Maximum",
                        label=label,
                    )
                    for name, label in (
                        ("RunningTaskCount", "Running"),
                        ("DesiredTaskCount", "Desired"),
                    )
                ],
                width=8,
            ),
        ]

    @staticmethod
    def _api_widgets(
        load_balancer: elbv2.ApplicationLoadBalancer, target_group: elbv2.ApplicationTargetGroup
    ) -> list[cloudwatch.IWidget]:
        return [
            cloudwatch.GraphWidget(
                title="API requests",
                left=[load_balancer.metrics.request_count(period=PERIOD, label="Requests")],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="API 5xx",
                left=[
                    target_group.metrics.http_code_target(
                        elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=PERIOD, label="From tasks"
                    ),
                    load_balancer.metrics.http_code_elb(
                        elbv2.HttpCodeElb.ELB_5XX_COUNT, period=PERIOD, label="From the ALB"
                    ),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="API latency (s)",
                left=[
                    target_group.metrics.target_response_time(
                        period=PERIOD, statistic=statistic, label=statistic
                    )
                    for statistic in ("p50", "p90", "p99")
                ],
                width=8,
            ),
        ]

    @staticmethod
    def _database_widgets(database: rds.DatabaseInstance) -> list[cloudwatch.IWidget]:
        return [
            cloudwatch.GraphWidget(
                title="Database CPU (%)",
                left=[database.metric_cpu_utilization(period=PERIOD, label="CPU")],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Database connections",
                left=[database.metric_database_connections(period=PERIOD, label="Connections")],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Database free storage (bytes)",
                left=[
                    database.metric_free_storage_space(
                        period=PERIOD, statistic="Minimum", label="Free"
                    )
                ],
                width=8,
            ),
        ]

    @staticmethod
    def _scheduler_widgets(scheduler: lambda_.IFunction) -> list[cloudwatch.IWidget]:
        return [
            cloudwatch.GraphWidget(
                title="Scheduler invocations and errors",
                left=[
                    scheduler.metric_invocations(period=PERIOD, label="Invocations"),
                    scheduler.metric_errors(period=PERIOD, label="Errors"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Scheduler duration (ms)",
                left=[scheduler.metric_duration(period=PERIOD, statistic="p99", label="p99")],
                width=12,
            ),
        ]
