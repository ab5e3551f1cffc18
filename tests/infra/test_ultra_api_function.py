"""The API as a Lambda behind a Function URL (flow_constructs.api_function)."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Template

from flow_constructs.api_function import ApiFunction
from tests.infra.conftest import synth_stacks


def _build(stack: Stack) -> None:
    repository = ecr.Repository.from_repository_name(stack, "Repo", "flow-builder")
    ApiFunction(
        stack,
        "Api",
        code=lambda_.DockerImageCode.from_ecr(
            repository,
            tag_or_digest="latest",
            entrypoint=["python", "-m", "awslambdaric"],
            cmd=["api.lambda_handler.handler"],
        ),
        architecture=lambda_.Architecture.X86_64,
        queue=sqs.Queue(stack, "Queue"),
        database_secret=secretsmanager.Secret(stack, "DatabaseUrl"),
        log_retention=logs.RetentionDays.ONE_WEEK,
        environment={"LOG_LEVEL": "INFO"},
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    outdir = tmp_path_factory.mktemp("api-function")
    return synth_stacks({"ApiTest": _build}, outdir)["ApiTest"]


def _function(template: Template) -> dict[str, Any]:
    (function,) = template.find_resources("AWS::Lambda::Function").values()
    return function["Properties"]


def test_function_runs_the_api_handler_outside_any_vpc(template: Template) -> None:
    props = _function(template)

    assert props["PackageType"] == "Image"
    assert props["ImageConfig"] == {
        "EntryPoint": ["python", "-m", "awslambdaric"],
        "Command": ["api.lambda_handler.handler"],
    }
    assert "VpcConfig" not in props
    assert props["Architectures"] == ["x86_64"]


def test_function_gets_exactly_the_api_settings_it_needs(template: Template) -> None:
    variables = _function(template)["Environment"]["Variables"]

    assert set(variables) == {
        "LOG_LEVEL",
        "QUEUE_URL",
        "DATABASE_SECRET_ARN",
        "API_KEYS_SECRET_ARN",
    }
    assert variables["DATABASE_SECRET_ARN"]["Ref"].startswith("DatabaseUrl")
    assert variables["API_KEYS_SECRET_ARN"]["Ref"].startswith("ApiApiKeys")


def test_api_keys_are_generated_into_a_secret(template: Template) -> None:
    template.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {"GenerateSecretString": {"ExcludePunctuation": True, "PasswordLength": 40}},
    )


def test_function_url_is_public_and_keys_are_checked_by_the_app(template: Template) -> None:
    template.has_resource_properties("AWS::Lambda::Url", {"AuthType": "NONE"})


def test_role_may_send_to_the_queue_and_read_both_secrets(template: Template) -> None:
    (policy,) = template.find_resources("AWS::IAM::Policy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    by_actions = {frozenset(s["Action"]): s for s in statements}

    assert set(by_actions) == {
        frozenset({"logs:CreateLogStream", "logs:PutLogEvents"}),
        frozenset({"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}),
        frozenset({"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}),
    }
    secrets = by_actions[
        frozenset({"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"})
    ]["Resource"]
    assert sorted(ref["Ref"][:10] for ref in secrets) == ["ApiApiKeys", "DatabaseUr"]


def test_no_managed_policy_is_attached(template: Template) -> None:
    (role,) = template.find_resources("AWS::IAM::Role").values()

    assert "ManagedPolicyArns" not in role["Properties"]


def test_logs_are_kept_for_the_given_retention(template: Template) -> None:
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 7})
    assert _function(template)["LoggingConfig"]["LogGroup"]["Ref"].startswith("ApiLogGroup")
