"""ApiService: ALB with logs and strict headers, HTTPS when configured, secrets, scaling."""

from __future__ import annotations

import pytest
from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template

from flow_constructs.api_service import ApiService
from tests.infra.conftest import only, synth_stacks

CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"


def _build(stack: Stack, *, certificate_arn: str | None) -> None:
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1)
    database_secret = secretsmanager.Secret(stack, "DatabaseSecret")
    ApiService(
        stack,
        "Api",
        cluster=ecs.Cluster(stack, "Cluster", vpc=vpc),
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        image=ecs.ContainerImage.from_registry("api:test"),
        cpu=512,
        memory_limit_mib=1024,
        cpu_architecture=ecs.CpuArchitecture.X86_64,
        environment={"LOG_LEVEL": "INFO"},
        secrets={"DB_PASSWORD": ecs.Secret.from_secrets_manager(database_secret, "password")},
        queue=sqs.Queue(stack, "Queue"),
        min_tasks=2,
        max_tasks=6,
        cpu_target_percent=60,
        requests_per_task=1000,
        certificate_arn=certificate_arn,
        log_retention=logs.RetentionDays.ONE_MONTH,
    )


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    return synth_stacks(
        {
            "Http": lambda stack: _build(stack, certificate_arn=None),
            "Https": lambda stack: _build(stack, certificate_arn=CERTIFICATE),
        },
        tmp_path_factory.mktemp("api-service"),
    )


@pytest.fixture(scope="module")
def template(templates: dict[str, Template]) -> Template:
    return templates["Http"]


def _attributes(template: Template) -> dict[str, str]:
    balancer = only(template.find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer").values())
    return {
        item["Key"]: item["Value"] for item in balancer["Properties"]["LoadBalancerAttributes"]
    }


def _container(template: Template) -> dict:
    task = only(template.find_resources("AWS::ECS::TaskDefinition").values())
    return only(task["Properties"]["ContainerDefinitions"])


def test_load_balancer_is_public_drops_bad_headers_and_logs(template: Template) -> None:
    attributes = _attributes(template)
    bucket = only(template.find_resources("AWS::S3::Bucket"))

    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer", {"Scheme": "internet-facing"}
    )
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    assert attributes["idle_timeout.timeout_seconds"] == "60"
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["access_logs.s3.bucket"] == {"Ref": bucket}


def test_access_log_bucket_is_encrypted_private_and_tls_only(template: Template) -> None:
    bucket = only(template.find_resources("AWS::S3::Bucket").values())["Properties"]
    policy = only(template.find_resources("AWS::S3::BucketPolicy").values())["Properties"]

    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    deny = only(s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_without_certificate_only_http_is_served(template: Template) -> None:
    listener = only(template.find_resources("AWS::ElasticLoadBalancingV2::Listener").values())

    assert listener["Properties"]["Port"] == 80
    assert listener["Properties"]["Protocol"] == "HTTP"
    assert listener["Properties"]["DefaultActions"][0]["Type"] == "forward"


def test_with_certificate_https_serves_and_http_redirects(templates: dict[str, Template]) -> None:
    listeners = templates["Https"].find_resources("AWS::ElasticLoadBalancingV2::Listener")
    by_port = {value["Properties"]["Port"]: value["Properties"] for value in listeners.values()}

    assert sorted(by_port) == [80, 443]
    assert by_port[443]["Protocol"] == "HTTPS"
    assert by_port[443]["Certificates"] == [{"CertificateArn": CERTIFICATE}]
    assert by_port[443]["DefaultActions"][0]["Type"] == "forward"
    assert by_port[80]["DefaultActions"] == [
        {
            "Type": "redirect",
            "RedirectConfig": {"Port": "443", "Protocol": "HTTPS", "StatusCode": "HTTP_301"},
        }
    ]


def test_target_group_checks_healthz(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "HealthCheckPath": "/healthz",
            "Port": 8000,
            "TargetType": "ip",
            "TargetGroupAttributes": Match.array_with(
                [{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}]
            ),
        },
    )


def test_service_rolls_back_failed_deployments_and_keeps_two_tasks(template: Template) -> None:
    service = only(template.find_resources("AWS::ECS::Service").values())["Properties"]

    assert service["DesiredCount"] == 2
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
        "Enable": True,
        "Rollback": True,
    }
    assert service["DeploymentConfiguration"]["MinimumHealthyPercent"] == 100
    assert service["AvailabilityZoneRebalancing"] == "ENABLED"
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    assert len(service["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]) == 2


def test_credentials_and_keys_are_secrets_never_plain_environment(template: Template) -> None:
    container = _container(template)
    environment = {item["Name"] for item in container["Environment"]}
    secrets = {item["Name"] for item in container["Secrets"]}

    assert environment == {"QUEUE_URL", "LOG_LEVEL"}
    assert secrets == {"DB_PASSWORD", "API_KEYS"}
    assert container["PortMappings"] == [{"ContainerPort": 8000, "Protocol": "tcp"}]
    assert "/healthz" in container["HealthCheck"]["Command"][1]


def test_scales_on_cpu_and_requests(template: Template) -> None:
    policies = template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    metrics = {
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"][
            "PredefinedMetricSpecification"
        ]["PredefinedMetricType"]: p["Properties"]["TargetTrackingScalingPolicyConfiguration"][
            "TargetValue"
        ]
        for p in policies.values()
    }

    assert metrics == {"ECSServiceAverageCPUUtilization": 60, "ALBRequestCountPerTarget": 1000}
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget", {"MinCapacity": 2, "MaxCapacity": 6}
    )


def test_five_xx_and_unhealthy_host_alarms(template: Template) -> None:
    five_xx = only(
        alarm["Properties"]
        for alarm in template.find_resources("AWS::CloudWatch::Alarm").values()
        if "Metrics" in alarm["Properties"]
    )
    metrics = {
        m["Id"]: m["MetricStat"]["Metric"]["MetricName"]
        for m in five_xx["Metrics"]
        if "MetricStat" in m
    }

    assert metrics == {
        "fromTasks": "HTTPCode_Target_5XX_Count",
        "fromBalancer": "HTTPCode_ELB_5XX_Count",
    }
    assert five_xx["Threshold"] == 10
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"MetricName": "UnHealthyHostCount", "Threshold": 1, "EvaluationPeriods": 3},
    )


def test_task_role_may_only_send_to_the_queue(template: Template) -> None:
    policy = only(
        template.find_resources(
            "AWS::IAM::Policy",
            {"Properties": {"Roles": [{"Ref": Match.string_like_regexp("TaskRole")}]}},
        ).values()
    )
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    actions = {action for statement in statements for action in statement["Action"]}

    assert actions == {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
