"""DeployTimeMigrations: the migration handler runs before the services, after the database."""

from __future__ import annotations

import pytest
from aws_cdk import Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Template

from flow_constructs.migrations import MIGRATIONS_HANDLER, DeployTimeMigrations
from tests.infra.conftest import only, synth_stacks


def _build(stack: Stack) -> None:
    repository = ecr.Repository.from_repository_name(stack, "Repo", "worker")
    # Stand-ins: something the migrations need first, and a consumer that must wait.
    database = secretsmanager.Secret(stack, "DatabaseSecret")
    consumer = sqs.Queue(stack, "Consumer")
    DeployTimeMigrations(
        stack,
        "Migrations",
        code=lambda_.DockerImageCode.from_ecr(repository, cmd=[MIGRATIONS_HANDLER]),
        environment={"LOG_LEVEL": "INFO"},
        database_secret=database,
        execute_after=[database],
        execute_before=[consumer],
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return synth_stacks({"MigrationsTest": _build}, tmp_path_factory.mktemp("migrations"))[
        "MigrationsTest"
    ]


def _resource_id(template: Template, resource_type: str, prefix: str) -> str:
    return only(key for key in template.find_resources(resource_type) if key.startswith(prefix))


def test_function_runs_the_migration_handler(template: Template) -> None:
    function = only(
        template.find_resources(
            "AWS::Lambda::Function", {"Properties": {"PackageType": "Image"}}
        ).values()
    )
    props = function["Properties"]

    assert props["ImageConfig"]["Command"] == ["flows.migrate.handler"]
    assert props["Timeout"] == 840  # under the trigger's 15 minutes
    assert props["ReservedConcurrentExecutions"] == 1
    assert sorted(props["Environment"]["Variables"]) == ["DATABASE_SECRET_ARN", "LOG_LEVEL"]


def test_trigger_invokes_the_current_version_synchronously(template: Template) -> None:
    version = _resource_id(template, "AWS::Lambda::Version", "MigrationsFunctionCurrentVersion")

    template.has_resource_properties(
        "Custom::Trigger",
        {
            "HandlerArn": {"Ref": version},
            "InvocationType": "RequestResponse",
            "ExecuteOnHandlerChange": True,
            "Timeout": "900000",
        },
    )


def test_consumers_wait_for_the_trigger_and_the_trigger_for_the_database(
    template: Template,
) -> None:
    trigger_id, trigger = only(template.find_resources("Custom::Trigger").items())
    consumer = template.find_resources("AWS::SQS::Queue")
    database = _resource_id(template, "AWS::SecretsManager::Secret", "DatabaseSecret")

    assert trigger_id in only(consumer.values())["DependsOn"]
    assert database in trigger["DependsOn"]
