"""Fargate Spot interruptions made visible: every interrupted task is logged and alarmed."""

from __future__ import annotations

import jsii
from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct


@jsii.implements(events.IRuleTarget)
class _LogGroupTarget:
    """A rule target that writes events to a log group whose resource policy allows it.

    NOTE: `aws_events_targets.CloudWatchLogGroup` sets that policy through a Lambda-backed
    custom resource; here the policy is a plain `AWS::Logs::ResourcePolicy` instead, so the
    stack deploys no extra function.
    """

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._log_group = log_group

    def bind(self, _rule: events.IRule, _id: str | None = None) -> events.RuleTargetConfig:
        """Point the rule at the log group."""
        return events.RuleTargetConfig(arn=self._log_group.log_group_arn)


class SpotInterruptionMonitor(Construct):
    """Logs each task of `cluster` stopped by a Spot interruption and alarms on any.

    Args:
        cluster: the cluster whose tasks are watched.
        log_retention: how long interruption events are kept.
        alarm_action: where the alarm notifies. Default: the alarm changes state only.

    The alarm fires when at least one task was interrupted in a 5-minute period and clears
    by itself; an interrupted run is brought back by the scheduler's reaper, so the alarm
    is a signal of lost capacity, not of lost work.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: ecs.ICluster,
        log_retention: logs.RetentionDays,
        alarm_action: cloudwatch.IAlarmAction | None = None,
    ) -> None:
        super().__init__(scope, construct_id)

        # EventBridge only delivers to log groups whose name starts with /aws/events/.
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=f"/aws/events/{Stack.of(self).stack_name}/spot-interruptions",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.log_group.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[
                    iam.ServicePrincipal("events.amazonaws.com"),
                    iam.ServicePrincipal("delivery.logs.amazonaws.com"),
                ],
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )

        self.rule = events.Rule(
            self,
            "Rule",
            description="Tasks of the worker cluster stopped by a Fargate Spot interruption",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Task State Change"],
                detail={
                    "clusterArn": [cluster.cluster_arn],
                    "lastStatus": ["STOPPED"],
                    "stopCode": ["SpotInterruption"],
                },
            ),
            targets=[_LogGroupTarget(self.log_group)],
        )

        self.alarm = self.metric_interruptions().create_alarm(
            self,
            "Alarm",
            alarm_description=(
                "A worker task was stopped by a Fargate Spot interruption; its run is"
                " re-queued by the scheduler. Frequent alarms mean Spot capacity is short:"
                " consider an on-demand weight (ultra.onDemandWeight)."
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            # No interruption publishes no data point.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        if alarm_action is not None:
            self.alarm.add_alarm_action(alarm_action)

    def metric_interruptions(self, *, period: Duration | None = None) -> cloudwatch.Metric:
        """Interrupted tasks: the times the rule matched."""
        return cloudwatch.Metric(
            namespace="AWS/Events",
            metric_name="TriggeredRules",
            dimensions_map={"RuleName": self.rule.rule_name},
            statistic="Sum",
            period=period or Duration.minutes(5),
        )
