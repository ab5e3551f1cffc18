"""The work queue that carries `{"run_id": ...}` messages, with its dead-letter queue."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sqs as sqs
from constructs import Construct


class WorkQueue(Construct):
    """A queue and dead-letter queue, encrypted, TLS-only, with two alarms.

    Args:
        visibility_timeout: how long a received message stays hidden; the worker extends it
            while a run is going, so it only bounds how soon a crashed worker's run returns.
        max_receive_count: receives after which a message moves to the dead-letter queue.
        oldest_message_age_threshold: the age of the oldest waiting message that raises the
            "oldest message age" alarm (runs are waiting too long to start).
        alarm_action: where both alarms notify. Default: the alarms only change state.

    The dead-letter queue keeps messages for 14 days, the longest SQS allows, so that the
    scheduler and an operator have time to look at them.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        visibility_timeout: Duration,
        max_receive_count: int,
        oldest_message_age_threshold: Duration,
        alarm_action: cloudwatch.IAlarmAction | None = None,
    ) -> None:
        super().__init__(scope, id)

        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=visibility_timeout,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=max_receive_count
            ),
        )

        # Any message here is a run that failed max_receive_count times: one is enough.
        self.dead_letter_alarm = cloudwatch.Alarm(
            self,
            "DeadLetterQueueNotEmptyAlarm",
            alarm_description="Runs reached the dead-letter queue: a worker failed them "
            f"{max_receive_count} times.",
            metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        # SQS stops sending metrics for idle queues, so missing data means nothing waits.
        self.oldest_message_age_alarm = cloudwatch.Alarm(
            self,
            "OldestMessageAgeAlarm",
            alarm_description="The oldest queued run has waited longer than "
            f"{oldest_message_age_threshold.to_seconds()} s: workers are not keeping up.",
            metric=self.queue.metric_approximate_age_of_oldest_message(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=oldest_message_age_threshold.to_seconds(),
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.alarms: tuple[cloudwatch.Alarm, ...] = (
            self.dead_letter_alarm,
            self.oldest_message_age_alarm,
        )
        if alarm_action is not None:
            for alarm in self.alarms:
                alarm.add_alarm_action(alarm_action)
