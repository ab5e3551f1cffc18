"""The `standard` context block: defaults, and every problem reported at once, exactly."""

from __future__ import annotations

import dataclasses

import pytest
from aws_cdk import aws_logs as logs

from stacks.config import ConfigError, ContextReader, StandardConfig
from tests.infra.conftest import CLI_VARIABLES, cdk_context


def test_cdk_json_block_gives_the_documented_defaults() -> None:
    # The block in cdk.json and the code's defaults must agree.
    assert StandardConfig.from_context(cdk_context()["standard"]) == StandardConfig.from_context(
        {}
    )


def test_defaults_are_production_settings() -> None:
    config = StandardConfig.from_context(None)

    assert config.max_azs == 2
    assert config.nat_provider == "gateway"
    assert config.nat_gateways == 2
    assert config.database_multi_az is True
    assert config.database_deletion_protection is True
    assert config.database_snapshot_on_delete is True
    assert config.database_backup_retention_days == 7
    assert config.api_min_tasks == 2
    assert config.certificate_arn is None
    assert config.log_retention == logs.RetentionDays.ONE_MONTH


def test_config_is_frozen_and_keyword_only() -> None:
    config = StandardConfig.from_context({})

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_azs = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        StandardConfig(*dataclasses.astuple(config))  # type: ignore[misc]


def test_valid_overrides_are_read() -> None:
    config = StandardConfig.from_context(
        {
            "maxAzs": 3,
            "natProvider": "instance",
            "natGateways": 1,
            "certificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/ab-12",
            "alarmEmail": "ops@example.com",
            "workerCpu": 2048,
            "workerMemoryMiB": 8192,
            "logRetentionDays": 7,
            "databaseMultiAz": False,
        }
    )

    assert config.max_azs == 3
    assert config.nat_provider == "instance"
    assert config.certificate_arn == "arn:aws:acm:eu-west-1:123456789012:certificate/ab-12"
    assert config.alarm_email == "ops@example.com"
    assert (config.worker_cpu, config.worker_memory_mib) == (2048, 8192)
    assert config.log_retention == logs.RetentionDays.ONE_WEEK
    assert config.database_multi_az is False


def test_every_problem_is_reported_once_with_key_value_and_allowed() -> None:
    with pytest.raises(ConfigError) as caught:
        StandardConfig.from_context(
            {
                "maxAzs": 4,
                "natGateways": 3,
                "apiCpu": 300,
                "workerCpu": 256,
                "workerMemoryMiB": 4096,
                "apiMinTasks": 3,
                "apiMaxTasks": 2,
                "databaseStorageGiB": 200,
                "databaseMaxStorageGiB": 100,
                "natProvider": "nat-gateway",
                "flowLogRetentionDays": 10,
                "logLevel": "info",
                "alarmEmail": "not-an-email",
                "databaseInstanceType": "db.t4g.small",
                "databaseMultiAz": "yes",
                "databaseBackupRetentionDays": 1,
                "certificateArn": "arn:aws:iam::123456789012:server-certificate/x",
                "workerMaxTasks": 0,
                "workerScaleInMinutes": 1.5,
                "colour": "blue",
            }
        )

    assert caught.value.problems == (
        "standard.maxAzs: got 4, expected an integer >= 2 and <= 3",
        'standard.natProvider: got "nat-gateway", expected one of "gateway", "instance"',
        "standard.natGateways: got 3, expected at most maxAzs (2)",
        "standard.flowLogRetentionDays: got 10, expected one of 1, 3, 5, 7, 14, 30, 60, 90, "
        "120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653",
        'standard.logLevel: got "info", expected one of "DEBUG", "INFO", "WARNING", "ERROR"',
        'standard.alarmEmail: got "not-an-email", expected an email address or null',
        'standard.databaseInstanceType: got "db.t4g.small", expected an RDS instance type '
        'without the "db." prefix, such as "t4g.small"',
        "standard.databaseMaxStorageGiB: got 100, expected at least databaseStorageGiB (200)",
        'standard.databaseMultiAz: got "yes", expected true or false',
        "standard.databaseBackupRetentionDays: got 1, expected an integer >= 7 and <= 35",
        "standard.apiCpu: got 300, expected one of 256, 512, 1024, 2048, 4096, 8192, 16384",
        "standard.apiMaxTasks: got 2, expected at least apiMinTasks (3)",
        'standard.certificateArn: got "arn:aws:iam::123456789012:server-certificate/x", '
        "expected an ACM certificate ARN or null",
        "standard.workerMemoryMiB: got 4096, expected a memory size (MiB) Fargate allows "
        "with workerCpu 256: one of 512, 1024, 2048",
        "standard.workerMaxTasks: got 0, expected an integer >= 1 and <= 100",
        "standard.workerScaleInMinutes: got 1.5, expected an integer >= 1 and <= 60",
        'standard.colour: got "blue", expected no such setting (known settings: alarmEmail, '
        "apiCpu, apiCpuTargetPercent, apiMaxTasks, apiMemoryMiB, apiMinTasks, "
        "apiRequestsPerTaskPerMinute, certificateArn, databaseBackupRetentionDays, "
        "databaseDeletionProtection, databaseInstanceType, databaseMaxStorageGiB, "
        "databaseMultiAz, databaseSnapshotOnDelete, databaseStorageGiB, flowLogRetentionDays, "
        "logLevel, logRetentionDays, maxAzs, natGateways, natProvider, "
        "queueMaxReceiveCount, queueOldestMessageAlarmMinutes, queueVisibilityTimeoutSeconds, "
        "workerConcurrency, workerCpu, workerMaxTasks, workerMemoryMiB, workerScaleInMinutes)",
    )
    assert str(caught.value).startswith(
        "invalid configuration in the cdk.json context:\n"
        "  - standard.maxAzs: got 4, expected an integer >= 2 and <= 3\n"
    )


def test_block_that_is_not_an_object_is_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        StandardConfig.from_context("small")

    assert caught.value.problems == (
        'standard: got "small", expected an object mapping setting names to values',
    )


def test_booleans_are_not_integers() -> None:
    read = ContextReader("block", {"count": True})

    assert read.integer("count", default=1, minimum=0) == 1
    assert read.problems == ["block.count: got true, expected an integer >= 0"]


def test_memory_sizes_in_uniform_steps_are_described_as_a_range() -> None:
    read = ContextReader("block", {"cpu": 1024, "memory": 1000})

    read.fargate_size("cpu", "memory", default_cpu=256, default_memory=512)

    assert read.problems == [
        "block.memory: got 1000, expected a memory size (MiB) Fargate allows with cpu 1024: "
        "2048 to 8192 in steps of 1024"
    ]


def test_app_validates_before_building_any_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    import app

    built: list[str] = []
    monkeypatch.setattr(app, "StandardStack", lambda *args, **kwargs: built.append("standard"))
    context = {**cdk_context(), "standard": {"maxAzs": 1, "apiCpu": "big"}}
    with pytest.raises(ConfigError) as caught:
        app.build_app(context=context, variables=CLI_VARIABLES)

    assert built == []
    assert caught.value.problems == (
        "standard.maxAzs: got 1, expected an integer >= 2 and <= 3",
        'standard.apiCpu: got "big", expected one of 256, 512, 1024, 2048, 4096, 8192, 16384',
    )
