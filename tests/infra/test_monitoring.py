"""AlarmTopic and OperationsDashboard, checked on StandardStack (the session synthesis)."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Template

from flow_constructs.monitoring import AlarmTopic
from tests.infra.conftest import only, synth_stacks


@pytest.fixture(scope="module")
def topic_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    return synth_stacks(
        {
            "WithEmail": lambda stack: AlarmTopic(stack, "Alarms", email="ops@example.com"),
            "WithoutEmail": lambda stack: AlarmTopic(stack, "Alarms"),
        },
        tmp_path_factory.mktemp("monitoring"),
    )


def test_email_subscription_only_when_configured(topic_templates: dict[str, Template]) -> None:
    topic_templates["WithEmail"].has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"}
    )
    topic_templates["WithoutEmail"].resource_count_is("AWS::SNS::Subscription", 0)


def test_topic_refuses_requests_without_tls(topic_templates: dict[str, Template]) -> None:
    policy = only(
        topic_templates["WithoutEmail"].find_resources("AWS::SNS::TopicPolicy").values()
    )
    deny = only(
        s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"
    )

    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_every_alarm_of_the_stack_notifies_the_topic(standard_template: Template) -> None:
    topic = only(standard_template.find_resources("AWS::SNS::Topic"))
    alarms = standard_template.find_resources("AWS::CloudWatch::Alarm")
    scaling = {key for key in alarms if key.startswith("WorkerScaling")}

    notifying = {
        key for key, alarm in alarms.items() if alarm["Properties"].get("AlarmActions") == [
            {"Ref": topic}
        ]
    }
    # The two scaling alarms act on the worker service instead of paging anyone.
    assert notifying == set(alarms) - scaling
    assert {key.split("Alarm")[0] for key in notifying} >= {
        "WorkQueueDeadLetterQueueNotEmpty",
        "WorkQueueOldestMessageAge",
        "ApiServerErrors",
        "ApiUnhealthyHosts",
        "DatabaseCpu",
        "DatabaseFreeStorage",
        "SchedulerErrors",
    }


def test_dashboard_shows_queue_workers_api_database_and_scheduler(
    standard_template: Template,
) -> None:
    dashboard = only(standard_template.find_resources("AWS::CloudWatch::Dashboard").values())
    body = json.dumps(dashboard["Properties"]["DashboardBody"])

    for metric in (
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateAgeOfOldestMessage",
        "RunningTaskCount",
        "RequestCount",
        "HTTPCode_Target_5XX_Count",
        "HTTPCode_ELB_5XX_Count",
        "TargetResponseTime",
        "CPUUtilization",
        "DatabaseConnections",
        "FreeStorageSpace",
        "Invocations",
        "Errors",
    ):
        assert metric in body, metric
    # The alarm status widget lists every alarm that pages.
    topic = only(standard_template.find_resources("AWS::SNS::Topic"))
    paging = [
        key
        for key, alarm in standard_template.find_resources("AWS::CloudWatch::Alarm").items()
        if alarm["Properties"].get("AlarmActions") == [{"Ref": topic}]
    ]
    for alarm in paging:
        assert json.dumps({"Fn::GetAtt": [alarm, "Arn"]}) in body, alarm

