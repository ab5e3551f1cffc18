"""Queue-driven scaling of the worker service: from zero on the first message, back to zero."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

# SQS publishes queue metrics once a minute; the alarms look at every datapoint.
METRIC_PERIOD = Duration.minutes(1)
# Time for a new task to start and take messages before another scale-out step.
DEFAULT_SCALE_OUT_COOLDOWN = Duration.minutes(2)


def scale_out_steps(runs_per_task: int) -> tuple[tuple[int, int], ...]:
    """(visible messages from, tasks to add) tiers: 1 task from 1 message, more for backlogs.

    A task works on `runs_per_task` runs at once, so a backlog of two or five tasks' worth
    adds two or five tasks at a time.
    """
    return ((1, 1), (2 * runs_per_task, 2), (5 * runs_per_task, 5))


class QueueDrivenScaling(Construct):
    """Step scaling of an ECS service's desired count between 0 and `max_tasks` by the queue.

    Two alarms drive it:
    - "queue-not-empty": visible messages >= 1 in a 1-minute period -> add tasks by backlog
      (`scale_out_steps`); Application Auto Scaling repeats the step every minute while the
      alarm stays in ALARM, after `scale_out_cooldown`.
    - "queue-empty": visible + in-flight messages == 0 for `scale_in_after` -> set the desired
      count to 0. In-flight messages are runs being worked on, so a busy worker keeps the
      service up; SQS stops publishing metrics for an idle queue, so missing data counts as
      empty.

    There is no CPU-based scaling: a run waiting on HTTP calls uses no CPU and must not be
    scaled in. Tasks that are working protect themselves from scale-in (the worker sets ECS
    task scale-in protection), so a scale-in never stops a run.

    Args:
        service: the worker service.
        queue: the work queue.
        max_tasks: the most tasks the service may run.
        runs_per_task: how many runs a task works on at once (WORKER_CONCURRENCY).
        scale_in_after: how long the queue must be empty before scaling to zero.
        scale_out_cooldown: how long a scale-out waits before the next one (time for new
            tasks to start and take messages). Default: 2 minutes.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        service: ecs.BaseService,
        queue: sqs.IQueue,
        max_tasks: int,
        runs_per_task: int,
        scale_in_after: Duration,
        scale_out_cooldown: Duration = DEFAULT_SCALE_OUT_COOLDOWN,
    ) -> None:
        super().__init__(scope, id)

        self.scalable_target = appscaling.ScalableTarget(
            self,
            "Target",
            service_namespace=appscaling.ServiceNamespace.ECS,
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=f"service/{service.cluster.cluster_name}/{service.service_name}",
            min_capacity=0,
            max_capacity=max_tasks,
        )

        # Scale out on the first visible message, more for larger backlogs.
        visible = queue.metric_approximate_number_of_messages_visible(
            period=METRIC_PERIOD, statistic="Maximum"
        )
        self.scale_out = appscaling.StepScalingAction(
            self,
            "ScaleOut",
            scaling_target=self.scalable_target,
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
            cooldown=scale_out_cooldown,
        )
        steps = scale_out_steps(runs_per_task)
        threshold = steps[0][0]
        for index, (from_messages, tasks) in enumerate(steps):
            # Bounds are relative to the alarm threshold; the last tier is unbounded.
            upper = steps[index + 1][0] - threshold if index + 1 < len(steps) else None
            self.scale_out.add_adjustment(
                adjustment=tasks, lower_bound=from_messages - threshold, upper_bound=upper
            )
        self.queue_not_empty_alarm = cloudwatch.Alarm(
            self,
            "QueueNotEmptyAlarm",
            alarm_description="queue-not-empty: runs are waiting; adds worker tasks.",
            metric=visible,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.queue_not_empty_alarm.add_alarm_action(
            cw_actions.ApplicationScalingAction(self.scale_out)
        )

        # Scale in to zero once nothing is waiting and nothing is being worked on.
        minutes = int(scale_in_after.to_minutes())
        backlog = cloudwatch.MathExpression(
            expression="visible + inFlight",
            label="Visible + in-flight messages",
            period=METRIC_PERIOD,
            using_metrics={
                "visible": visible,
                "inFlight": queue.metric_approximate_number_of_messages_not_visible(
                    period=METRIC_PERIOD, statistic="Maximum"
                ),
            },
        )
        self.scale_in = appscaling.StepScalingAction(
            self,
            "ScaleIn",
            scaling_target=self.scalable_target,
            adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
            cooldown=METRIC_PERIOD,
        )
        self.scale_in.add_adjustment(adjustment=0, upper_bound=0)
        self.queue_empty_alarm = cloudwatch.Alarm(
            self,
            "QueueEmptyAlarm",
            alarm_description=f"queue-empty: no run waiting or in progress for {minutes} "
            "minutes; scales the workers to zero.",
            metric=backlog,
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=minutes,
            datapoints_to_alarm=minutes,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        self.queue_empty_alarm.add_alarm_action(cw_actions.ApplicationScalingAction(self.scale_in))
