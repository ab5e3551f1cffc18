"""Deploy-time database migrations: Alembic runs before the services roll."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration, triggers
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct, IConstruct

from flow_constructs.functions import single_run_image_function

MIGRATIONS_HANDLER = "flows.migrate.handler"

# A migration that needs longer must be split or run by hand. The trigger waits up to
# Lambda's 15-minute limit, so a timed-out migration still reports back as a failure.
MIGRATION_TIMEOUT = Duration.minutes(14)
TRIGGER_TIMEOUT = Duration.minutes(15)


class DeployTimeMigrations(Construct):
    """A Lambda from the worker image running `flows.migrate.handler`, triggered on deploy.

    Args:
        code: the worker image running `flows.migrate.handler`
            (see `images.lambda_image_code`).
        environment: plain variables (e.g. LOG_LEVEL); DATABASE_SECRET_ARN is added.
        database_secret: a secret holding the database URL or the RDS JSON document.
        vpc / vpc_subnets / security_groups: attach the function to a VPC. Default: outside
            any VPC.
        execute_before: constructs (services, the scheduler) that CloudFormation creates or
            updates only after the migrations succeeded.
        execute_after: constructs the migrations need first (the database instance and
            the security group rules that let the function reach it). Default: none.
        log_retention: how long the function's log group keeps events. Default: one month.

    The trigger invokes the function synchronously whenever its code or configuration
    changes (every new image); the handler raises on failure, which fails the trigger's
    custom resource and so rolls the deployment back before any service sees the new code.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        code: lambda_.DockerImageCode,
        environment: Mapping[str, str],
        database_secret: secretsmanager.ISecret,
        execute_before: Sequence[IConstruct],
        execute_after: Sequence[IConstruct] = (),
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        architecture: lambda_.Architecture = lambda_.Architecture.X86_64,
    ) -> None:
        super().__init__(scope, id)

        self.log_group = logs.LogGroup(self, "LogGroup", retention=log_retention)
        # Migrations must not run twice at once; the trigger invokes it once per deploy.
        self.function = single_run_image_function(
            self,
            "Function",
            description="Flow Builder migrations: applies Alembic migrations at deploy time.",
            code=code,
            architecture=architecture,
            timeout=MIGRATION_TIMEOUT,
            environment={"DATABASE_SECRET_ARN": database_secret.secret_arn, **environment},
            log_group=self.log_group,
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            security_groups=security_groups,
        )
        database_secret.grant_read(self.function)

        self.trigger = triggers.Trigger(
            self,
            "Trigger",
            handler=self.function,
            invocation_type=triggers.InvocationType.REQUEST_RESPONSE,
            timeout=TRIGGER_TIMEOUT,
            execute_on_handler_change=True,
            execute_before=list(execute_before),
            execute_after=list(execute_after),
        )

    def execute_before(self, *constructs: IConstruct) -> None:
        """Make more constructs wait for the migrations."""
        self.trigger.execute_before(*constructs)
