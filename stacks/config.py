"""Reading and validating the `cdk.json` context blocks that configure the stacks.

Every stack's configuration is a frozen, keyword-only dataclass built by one `from_context`
function. The functions use `ContextReader`, which collects every problem in a block so that
one `ConfigError` lists them all, each as `<block>.<key>: got <value>, expected <allowed>`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from aws_cdk import aws_logs as logs

# The retention periods CloudWatch Logs accepts, in days.
LOG_RETENTION_DAYS: dict[int, logs.RetentionDays] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}

# Fargate task sizes: CPU units -> the memory sizes (MiB) allowed with them.
FARGATE_MEMORY_MIB: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}

_MISSING = object()


class ConfigError(ValueError):
    """The `cdk.json` context holds values the stacks cannot be built from."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid configuration in the cdk.json context:\n{lines}")


def show(value: Any) -> str:
    """A context value as it would be written in cdk.json."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def raise_problems(problems: Iterable[str]) -> None:
    """Raise one `ConfigError` listing every problem, if there is any."""
    collected = list(problems)
    if collected:
        raise ConfigError(collected)


class ContextReader:
    """Reads typed values from one context block and collects what is wrong with them."""

    def __init__(self, block: str, raw: Any) -> None:
        self.block = block
        self.problems: list[str] = []
        self._seen: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            self.problems.append(
                f"{block}: got {show(raw)}, expected an object mapping setting names to values"
            )
            raw = {}
        self._raw: Mapping[str, Any] = raw

    def problem(self, key: str, value: Any, expected: str) -> None:
        """Record that `key` holds `value` where `expected` describes what is allowed."""
        self.problems.append(f"{self.block}.{key}: got {show(value)}, expected {expected}")

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self._raw.get(key, _MISSING)

    def integer(
        self, key: str, *, default: int, minimum: int, maximum: int | None = None
    ) -> int:
        """An integer in [minimum, maximum]; the default when the key is absent or wrong."""
        value = self._get(key)
        if value is _MISSING:
            return default
        upper = "" if maximum is None else f" and <= {maximum}"
        in_range = (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= minimum
            and (maximum is None or value <= maximum)
        )
        if not in_range:
            self.problem(key, value, f"an integer >= {minimum}{upper}")
            return default
        return value

    def boolean(self, key: str, *, default: bool) -> bool:
        """`true` or `false`."""
        value = self._get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(key, value, "true or false")
            return default
        return value

    def choice(self, key: str, *, default: Any, allowed: Sequence[Any]) -> Any:
        """One of `allowed` (compared by value and type)."""
        value = self._get(key)
        if value is _MISSING:
            return default
        if not any(type(value) is type(option) and value == option for option in allowed):
            listed = ", ".join(show(option) for option in allowed)
            self.problem(key, value, f"one of {listed}")
            return default
        return value

    def optional_string(self, key: str, *, pattern: str, expected: str) -> str | None:
        """A string matching `pattern`, or null / absent for none."""
        value = self._get(key)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            self.problem(key, value, f"{expected} or null")
            return None
        return value

    def string(self, key: str, *, default: str, pattern: str, expected: str) -> str:
        """A string matching `pattern`."""
        value = self._get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            self.problem(key, value, expected)
            return default
        return value

    def string_list(
        self, key: str, *, pattern: str, expected: str, minimum: int = 0
    ) -> tuple[str, ...]:
        """A list of strings, each matching `pattern`, with at least `minimum` entries."""
        value = self._get(key)
        if value is _MISSING or value is None:
            value = []
        valid = isinstance(value, list) and all(
            isinstance(item, str) and re.fullmatch(pattern, item) for item in value
        )
        if not valid or len(value) < minimum:
            self.problem(key, value, f"a list of at least {minimum} {expected}")
            return ()
        return tuple(value)

    def log_retention(self, key: str, *, default: int) -> logs.RetentionDays:
        """A CloudWatch Logs retention period in days."""
        days = self.choice(key, default=default, allowed=tuple(LOG_RETENTION_DAYS))
        return LOG_RETENTION_DAYS[days]

    def fargate_size(
        self, cpu_key: str, memory_key: str, *, default_cpu: int, default_memory: int
    ) -> tuple[int, int]:
        """A Fargate CPU / memory pair that Fargate accepts together."""
        cpu = self.choice(cpu_key, default=default_cpu, allowed=tuple(FARGATE_MEMORY_MIB))
        memory = self._get(memory_key)
        if memory is _MISSING:
            memory = default_memory
        allowed = FARGATE_MEMORY_MIB[cpu]
        if memory not in allowed or isinstance(memory, bool):
            self.problem(
                memory_key,
                memory,
                f"a memory size (MiB) Fargate allows with {cpu_key} {cpu}: {_sizes(allowed)}",
            )
            return cpu, allowed[0]
        return cpu, memory

    def finish(self) -> None:
        """Record unknown keys, then raise one `ConfigError` if anything was wrong."""
        for key in self._raw:
            if key not in self._seen:
                known = ", ".join(sorted(self._seen))
                self.problem(key, self._raw[key], f"no such setting (known settings: {known})")
        raise_problems(self.problems)


def _sizes(sizes: Sequence[int]) -> str:
    steps = {later - earlier for earlier, later in pairwise(sizes)}
    if len(sizes) > 3 and len(steps) == 1:
        return f"{sizes[0]} to {sizes[-1]} in steps of {steps.pop()}"
    return "one of " + ", ".join(str(size) for size in sizes)


@dataclass(frozen=True, kw_only=True)
class StandardConfig:
    """StandardStack's settings, read from the `standard` context block."""

    max_azs: int
    nat_provider: str
    nat_gateways: int
    flow_log_retention: logs.RetentionDays
    log_retention: logs.RetentionDays
    log_level: str
    alarm_email: str | None
    database_instance_type: str
    database_allocated_storage_gib: int
    database_max_allocated_storage_gib: int
    database_multi_az: bool
    database_deletion_protection: bool
    database_snapshot_on_delete: bool
    database_backup_retention_days: int
    certificate_arn: str | None
    api_cpu: int
    api_memory_mib: int
    api_min_tasks: int
    api_max_tasks: int
    api_cpu_target_percent: int
    api_requests_per_task: int
    worker_cpu: int
    worker_memory_mib: int
    worker_max_tasks: int
    worker_concurrency: int
    worker_scale_in_minutes: int
    queue_visibility_timeout_seconds: int
    queue_max_receive_count: int
    queue_oldest_message_alarm_minutes: int

    @classmethod
    def from_context(cls, raw: Any) -> StandardConfig:
        """Build from the `standard` block, or raise one `ConfigError` naming every problem."""
        read = ContextReader("standard", raw)
        config = cls(
            **_standard_network(read),
            **_standard_operations(read),
            **_standard_database(read),
            **_standard_api(read),
            **_standard_worker(read),
        )
        read.finish()
        return config


def _standard_network(read: ContextReader) -> dict[str, Any]:
    max_azs = read.integer("maxAzs", default=2, minimum=2, maximum=3)
    nat_provider = read.choice("natProvider", default="gateway", allowed=("gateway", "instance"))
    nat_gateways = read.integer("natGateways", default=2, minimum=1, maximum=3)
    if nat_gateways > max_azs:
        read.problem("natGateways", nat_gateways, f"at most maxAzs ({max_azs})")
    return {
        "max_azs": max_azs,
        "nat_provider": nat_provider,
        "nat_gateways": nat_gateways,
        "flow_log_retention": read.log_retention("flowLogRetentionDays", default=90),
    }


def _standard_operations(read: ContextReader) -> dict[str, Any]:
    return {
        "log_retention": read.log_retention("logRetentionDays", default=30),
        "log_level": read.choice(
            "logLevel", default="INFO", allowed=("DEBUG", "INFO", "WARNING", "ERROR")
        ),
        "alarm_email": read.optional_string(
            "alarmEmail", pattern=r"[^@\s]+@[^@\s]+\.[^@\s]+", expected="an email address"
        ),
    }


def _standard_database(read: ContextReader) -> dict[str, Any]:
    instance_type = read.string(
        "databaseInstanceType",
        default="t4g.small",
        pattern=r"[a-z][a-z0-9-]*\.[a-z0-9]+",
        expected='an RDS instance type without the "db." prefix, such as "t4g.small"',
    )
    storage = read.integer("databaseStorageGiB", default=20, minimum=20, maximum=65536)
    max_storage = read.integer("databaseMaxStorageGiB", default=100, minimum=20, maximum=65536)
    if max_storage < storage:
        read.problem(
            "databaseMaxStorageGiB", max_storage, f"at least databaseStorageGiB ({storage})"
        )
    return {
        "database_instance_type": instance_type,
        "database_allocated_storage_gib": storage,
        "database_max_allocated_storage_gib": max_storage,
        "database_multi_az": read.boolean("databaseMultiAz", default=True),
        "database_deletion_protection": read.boolean("databaseDeletionProtection", default=True),
        "database_snapshot_on_delete": read.boolean("databaseSnapshotOnDelete", default=True),
        "database_backup_retention_days": read.integer(
            "databaseBackupRetentionDays", default=7, minimum=7, maximum=35
        ),
    }


def _standard_api(read: ContextReader) -> dict[str, Any]:
    cpu, memory = read.fargate_size("apiCpu", "apiMemoryMiB", default_cpu=512, default_memory=1024)
    min_tasks = read.integer("apiMinTasks", default=2, minimum=1, maximum=100)
    max_tasks = read.integer("apiMaxTasks", default=6, minimum=1, maximum=100)
    if max_tasks < min_tasks:
        read.problem("apiMaxTasks", max_tasks, f"at least apiMinTasks ({min_tasks})")
    return {
        "api_cpu": cpu,
        "api_memory_mib": memory,
        "api_min_tasks": min_tasks,
        "api_max_tasks": max_tasks,
        "api_cpu_target_percent": read.integer(
            "apiCpuTargetPercent", default=60, minimum=10, maximum=90
        ),
        "api_requests_per_task": read.integer(
            "apiRequestsPerTaskPerMinute", default=1000, minimum=10
        ),
        "certificate_arn": read.optional_string(
            "certificateArn",
            pattern=r"arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+",
            expected="an ACM certificate ARN",
        ),
    }


def _standard_worker(read: ContextReader) -> dict[str, Any]:
    cpu, memory = read.fargate_size(
        "workerCpu", "workerMemoryMiB", default_cpu=1024, default_memory=2048
    )
    return {
        "worker_cpu": cpu,
        "worker_memory_mib": memory,
        "worker_max_tasks": read.integer("workerMaxTasks", default=4, minimum=1, maximum=100),
        "worker_concurrency": read.integer(
            "workerConcurrency", default=10, minimum=1, maximum=100
        ),
        "worker_scale_in_minutes": read.integer(
            "workerScaleInMinutes", default=10, minimum=1, maximum=60
        ),
        "queue_visibility_timeout_seconds": read.integer(
            "queueVisibilityTimeoutSeconds", default=300, minimum=30, maximum=43200
        ),
        "queue_max_receive_count": read.integer(
            "queueMaxReceiveCount", default=5, minimum=1, maximum=1000
        ),
        "queue_oldest_message_alarm_minutes": read.integer(
            "queueOldestMessageAlarmMinutes", default=15, minimum=1, maximum=1440
        ),
    }
