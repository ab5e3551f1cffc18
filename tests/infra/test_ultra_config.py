"""UltraConfig: the `ultra` context block, validated completely with exact messages."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_logs as logs

from stacks.config import ConfigError
from stacks.ultra_config import UltraConfig

VPC = "vpc-0123456789abcdef0"
SUBNET_A = "subnet-0123456789abcdef0"
SUBNET_B = "subnet-0fedcba9876543210"


def _minimal(**overrides: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "vpcId": VPC,
        "publicSubnetIds": [SUBNET_A, SUBNET_B],
        "availabilityZones": ["eu-west-1a", "eu-west-1b"],
    }
    block.update(overrides)
    return block


def _problems(block: Any) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        UltraConfig.from_context(block)
    return list(raised.value.problems)


def test_defaults_are_the_cheapest_working_setup() -> None:
    config = UltraConfig.from_context(_minimal())

    assert config.worker_subnet_id == SUBNET_A
    assert config.worker_availability_zone == "eu-west-1a"
    assert config.database_secret is None
    assert (config.worker_cpu, config.worker_memory_mib) == (256, 512)
    assert config.cpu_architecture_name == "X86_64"
    assert not config.arm64
    assert (config.on_demand_base, config.on_demand_weight) == (0, 0)
    assert config.log_retention == logs.RetentionDays.ONE_WEEK
    assert config.api == "lambda"
    assert config.alarm_email is None
    assert config.queue_max_receive_count == 5


def test_the_configured_subnet_picks_its_own_zone() -> None:
    config = UltraConfig.from_context(_minimal(workerSubnetId=SUBNET_B))

    assert (config.worker_subnet_id, config.worker_availability_zone) == (SUBNET_B, "eu-west-1b")


@pytest.mark.parametrize(
    ("secret", "is_arn"),
    [
        ("flow-builder/database-url", False),
        ("arn:aws:secretsmanager:eu-west-1:123456789012:secret:flow-builder/db-AbC123", True),
    ],
)
def test_database_secret_by_name_or_arn(secret: str, is_arn: bool) -> None:
    config = UltraConfig.from_context(_minimal(databaseSecret=secret))

    assert config.database_secret == secret
    assert config.database_secret_is_arn is is_arn


def test_arm64_is_accepted() -> None:
    config = UltraConfig.from_context(_minimal(cpuArchitecture="ARM64"))

    assert config.arm64
    assert config.cpu_architecture_name == "ARM64"


def test_config_is_frozen() -> None:
    config = UltraConfig.from_context(_minimal())

    with pytest.raises(AttributeError):
        config.api = "none"  # type: ignore[misc]


def test_missing_vpc_settings_are_all_reported() -> None:
    assert _problems({}) == [
        "ultra.vpcId: got null, expected a VPC id such as vpc-0a1b2c3d",
        "ultra.publicSubnetIds: got [], expected a list of at least 1 public subnet ids such"
        " as subnet-0a1b2c3d",
        "ultra.availabilityZones: got [], expected a list of at least 1 availability zone"
        " names such as us-east-1a",
    ]


def test_a_block_that_is_not_an_object_is_named() -> None:
    assert _problems("vpc-0123456789abcdef0")[0] == (
        'ultra: got "vpc-0123456789abcdef0", expected an object mapping setting names to values'
    )


def test_malformed_ids_are_reported_with_their_value() -> None:
    assert _problems(_minimal(vpcId="vpc-12", publicSubnetIds=[SUBNET_A, "subnet-x"])) == [
        'ultra.vpcId: got "vpc-12", expected a VPC id such as vpc-0a1b2c3d',
        f'ultra.publicSubnetIds: got ["{SUBNET_A}", "subnet-x"], expected a list of at least'
        " 1 public subnet ids such as subnet-0a1b2c3d",
    ]


def test_every_subnet_needs_its_zone() -> None:
    assert _problems(_minimal(availabilityZones=["eu-west-1a"])) == [
        'ultra.availabilityZones: got ["eu-west-1a"], expected one zone per entry of'
        " ultra.publicSubnetIds (2), in the same order"
    ]


def test_worker_subnet_must_be_one_of_the_public_subnets() -> None:
    assert _problems(_minimal(workerSubnetId="subnet-00000000")) == [
        f'ultra.workerSubnetId: got "subnet-00000000", expected one of ["{SUBNET_A}",'
        f' "{SUBNET_B}"] or null'
    ]


def test_every_bad_setting_is_reported_at_once() -> None:
    block = _minimal(
        databaseSecret="arn:aws:s3:::bucket",
        workerCpu=256,
        workerMemoryMiB=4096,
        cpuArchitecture="arm64",
        onDemandWeight=-1,
        onDemandBase=True,
        logRetentionDays=10,
        logLevel="TRACE",
        api="fargate",
        alarmEmail="nobody",
        queueMaxReceiveCount=0,
        vpcID=VPC,
    )

    assert _problems(block) == [
        'ultra.databaseSecret: got "arn:aws:s3:::bucket", expected the name or ARN of a'
        " Secrets Manager secret holding the database URL or null",
        "ultra.workerMemoryMiB: got 4096, expected a memory size (MiB) Fargate allows with"
        " workerCpu 256: one of 512, 1024, 2048",
        'ultra.cpuArchitecture: got "arm64", expected one of "X86_64", "ARM64"',
        "ultra.onDemandBase: got true, expected an integer >= 0 and <= 100000",
        "ultra.onDemandWeight: got -1, expected an integer >= 0 and <= 1000",
        "ultra.logRetentionDays: got 10, expected one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150,"
        " 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653",
        'ultra.logLevel: got "TRACE", expected one of "DEBUG", "INFO", "WARNING", "ERROR"',
        'ultra.api: got "fargate", expected one of "lambda", "none"',
        'ultra.alarmEmail: got "nobody", expected an email address or null',
        "ultra.queueMaxReceiveCount: got 0, expected an integer >= 1 and <= 1000",
        'ultra.vpcID: got "vpc-0123456789abcdef0", expected no such setting (known settings:'
        " alarmEmail, api, availabilityZones, cpuArchitecture, databaseSecret, logLevel,"
        " logRetentionDays, onDemandBase, onDemandWeight, publicSubnetIds,"
        " queueMaxReceiveCount, queueOldestMessageAlarmMinutes,"
        " queueVisibilityTimeoutSeconds, vpcId, workerCpu, workerMemoryMiB, workerSubnetId)",
    ]


def test_the_error_message_lists_problems_one_per_line() -> None:
    with pytest.raises(ConfigError) as raised:
        UltraConfig.from_context(_minimal(api="fargate", logLevel="TRACE"))

    assert str(raised.value) == (
        "invalid configuration in the cdk.json context:\n"
        '  - ultra.logLevel: got "TRACE", expected one of "DEBUG", "INFO", "WARNING", "ERROR"\n'
        '  - ultra.api: got "fargate", expected one of "lambda", "none"'
    )
