"""StandardStack's PostgreSQL database on RDS."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_rds as rds
from constructs import Construct

from flow_constructs.nag import acknowledge

# PostgreSQL 18 is the newest major version RDS offers; RDS applies minor upgrades itself.
ENGINE = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_18_3)
DATABASE_NAME = "flows"
ADMIN_USER = "flows"

# Where the ECS secrets take the database fields from, in the RDS secret's JSON document.
SECRET_FIELDS = {
    "DB_HOST": "host",
    "DB_PORT": "port",
    "DB_USER": "username",
    "DB_PASSWORD": "password",
    "DB_NAME": "dbname",
}


class Database(Construct):
    """An encrypted PostgreSQL instance in isolated subnets, with generated credentials.

    Args:
        vpc / vpc_subnets: where the instance runs (isolated subnets).
        instance_type: the RDS instance class without the "db." prefix.
        allocated_storage_gib / max_allocated_storage_gib: initial gp3 storage, and the
            ceiling RDS storage autoscaling may grow it to.
        multi_az: a standby in a second zone that RDS fails over to.
        deletion_protection: refuse `DeleteDBInstance` (and so a stack delete) while set.
        snapshot_on_delete: take a final snapshot when the instance is removed; without it
            the data is gone with the instance (development only).
        backup_retention: days of automated backups and point-in-time recovery.
        alarm_action: where the CPU and free-storage alarms notify. Default: they only
            change state.

    Nothing can connect until `allow_from` names a security group; the server refuses
    connections without TLS (`rds.force_ssl`).
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        vpc: ec2.IVpc,
        vpc_subnets: ec2.SubnetSelection,
        instance_type: str,
        allocated_storage_gib: int,
        max_allocated_storage_gib: int,
        multi_az: bool,
        deletion_protection: bool,
        snapshot_on_delete: bool,
        backup_retention: Duration,
        alarm_action: cloudwatch.IAlarmAction | None = None,
    ) -> None:
        super().__init__(scope, id)

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="Flow Builder database: PostgreSQL from the services only",
            allow_all_outbound=False,
        )
        self.parameter_group = rds.ParameterGroup(
            self,
            "Parameters",
            engine=ENGINE,
            description="Flow Builder PostgreSQL: TLS required",
            parameters={"rds.force_ssl": "1"},
        )
        removal = RemovalPolicy.SNAPSHOT if snapshot_on_delete else RemovalPolicy.DESTROY
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            engine=ENGINE,
            instance_type=ec2.InstanceType(instance_type),
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            security_groups=[self.security_group],
            credentials=rds.Credentials.from_generated_secret(ADMIN_USER),
            database_name=DATABASE_NAME,
            parameter_group=self.parameter_group,
            allocated_storage=allocated_storage_gib,
            max_allocated_storage=max_allocated_storage_gib,
            storage_type=rds.StorageType.GP3,
            storage_encrypted=True,
            multi_az=multi_az,
            deletion_protection=deletion_protection,
            removal_policy=removal,
            backup_retention=backup_retention,
            auto_minor_version_upgrade=True,
            # NOTE: PostgreSQL logs stay in RDS (console / DownloadDBLogFilePortion). Exporting
            # them creates a log group that never expires unless CDK adds its log-retention
            # Lambda; left out until the project wants that extra function.
        )
        secret = self.instance.secret
        assert secret is not None  # always set: the credentials are generated
        self.secret = secret
        acknowledge(
            # The generated secret is a child of the instance (`secret` is its attachment).
            self.instance,
            "AwsSolutions-SMG4",
            "Not rotated automatically: ECS injects DB_PASSWORD when a task starts, so a "
            "rotation would break running API and worker tasks until they are replaced. "
            "Rotate by changing the secret and redeploying the services.",
        )
        if not multi_az:
            acknowledge(
                self.instance,
                "AwsSolutions-RDS3",
                "standard.databaseMultiAz is false (development): half the instance cost, "
                "but an AZ outage or maintenance takes the database down.",
            )
        if not deletion_protection:
            acknowledge(
                self.instance,
                "AwsSolutions-RDS10",
                "standard.databaseDeletionProtection is false (development): the stack can "
                "be deleted in one step, and so can the database.",
            )
        acknowledge(
            self.instance,
            "AwsSolutions-RDS11",
            "PostgreSQL keeps its default port: the instance is in isolated subnets and its "
            "security group admits only the four service groups, so a custom port would add "
            "configuration without adding protection.",
        )

        self.cpu_alarm = cloudwatch.Alarm(
            self,
            "CpuAlarm",
            alarm_description="Database CPU above 80% for 15 minutes.",
            metric=self.instance.metric_cpu_utilization(period=Duration.minutes(5)),
            threshold=80,
            evaluation_periods=3,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.MISSING,
        )
        # RDS grows the storage when less than 10% is free; an alarm that lasts 15 minutes
        # means it could not (the ceiling is reached, or it grew within the last 6 hours).
        low_storage_bytes = allocated_storage_gib * 1024**3 // 10
        self.free_storage_alarm = cloudwatch.Alarm(
            self,
            "FreeStorageAlarm",
            alarm_description="Database free storage below 10% of the initial size for 15 "
            "minutes: storage autoscaling is not keeping up.",
            metric=self.instance.metric_free_storage_space(
                period=Duration.minutes(5), statistic="Minimum"
            ),
            threshold=low_storage_bytes,
            evaluation_periods=3,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.MISSING,
        )
        self.alarms: tuple[cloudwatch.Alarm, ...] = (self.cpu_alarm, self.free_storage_alarm)
        if alarm_action is not None:
            for alarm in self.alarms:
                alarm.add_alarm_action(alarm_action)

    def allow_from(self, peer: ec2.IConnectable, description: str) -> None:
        """Let `peer` (a service's security group) open PostgreSQL connections."""
        self.instance.connections.allow_default_port_from(peer, description)

    def ecs_secrets(self) -> dict[str, ecs.Secret]:
        """DB_HOST, DB_PORT, DB_USER, DB_PASSWORD and DB_NAME as ECS secrets."""
        return {
            name: ecs.Secret.from_secrets_manager(self.secret, field)
            for name, field in SECRET_FIELDS.items()
        }
