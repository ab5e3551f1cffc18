"""The API as a container-image Lambda behind a Function URL: no load balancer, no idle cost."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from flow_constructs.nag import acknowledge


class ApiFunction(Construct):
    """The FastAPI app of `api/` run by Lambda, reachable at a public Function URL.

    Args:
        code: the API image with the Lambda handler `api.lambda_handler.handler` as command.
        architecture: must match the architecture the image is built for.
        queue: the work queue the API sends `{"run_id": ...}` messages to.
        database_secret: a secret holding the database URL (or the RDS JSON document);
            the function reads it at start through `DATABASE_SECRET_ARN`.
        log_retention: how long the function's logs are kept.
        environment: extra variables (e.g. `LOG_LEVEL`). Default: none.
        memory_size: MiB; Lambda gives CPU in proportion. Default: 512 MiB.
        timeout: per request. Default: 30 seconds.

    The function runs outside any VPC so it reaches SQS, Secrets Manager and an external
    database over the internet without NAT. Callers authenticate with the bearer keys in
    `api_keys_secret` (comma-separated), which the stack generates; the URL itself is open.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.DockerImageCode,
        architecture: lambda_.Architecture,
        queue: sqs.IQueue,
        database_secret: secretsmanager.ISecret,
        log_retention: logs.RetentionDays,
        environment: Mapping[str, str] | None = None,
        memory_size: int = 512,
        timeout: Duration | None = None,
    ) -> None:
        super().__init__(scope, construct_id)

        self.api_keys_secret = secretsmanager.Secret(
            self,
            "ApiKeys",
            description="Bearer keys accepted by the Flow Builder API, comma-separated",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=40
            ),
        )
        acknowledge(
            self.api_keys_secret,
            "AwsSolutions-SMG4",
            "API keys are handed to clients, so automatic rotation would lock them out;"
            " rotate by writing a new comma-separated key list, old and new keys side by side.",
        )

        self.log_group = logs.LogGroup(
            self, "LogGroup", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        # An own role with write access to this one log group, instead of the managed
        # AWSLambdaBasicExecutionRole that may write to every log group in the account.
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.log_group.grant_write(self.role)

        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            description="Flow Builder API (FastAPI through the Lambda handler)",
            code=code,
            architecture=architecture,
            role=self.role,
            log_group=self.log_group,
            memory_size=memory_size,
            timeout=timeout or Duration.seconds(30),
            environment={
                **(environment or {}),
                "QUEUE_URL": queue.queue_url,
                "DATABASE_SECRET_ARN": database_secret.secret_arn,
                "API_KEYS_SECRET_ARN": self.api_keys_secret.secret_arn,
            },
        )
        queue.grant_send_messages(self.function)
        database_secret.grant_read(self.function)
        self.api_keys_secret.grant_read(self.function)

        # The API checks bearer keys itself; IAM auth would force SigV4 on every client.
        self.url = self.function.add_function_url(
            auth_type=lambda_.FunctionUrlAuthType.NONE,
        )
