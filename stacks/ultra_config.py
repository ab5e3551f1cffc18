"""UltraStack's configuration: the `ultra` block of the cdk.json context, validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_logs as logs

from flow_constructs.images import ARCHITECTURES
from stacks.config import ContextReader, show

CONTEXT_KEY = "ultra"

_VPC_ID = r"vpc-[0-9a-f]{8}(?:[0-9a-f]{9})?"
_SUBNET_ID = r"subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?"
# Zone names such as us-east-1a, us-gov-west-1b or a Local Zone like us-west-2-lax-1a.
_AVAILABILITY_ZONE = r"[a-z]{2}(?:-[a-z]+)+-\d+(?:-[a-z]+-\d+)?[a-z]"
_SECRETS_MANAGER_NAME = r"[A-Za-z0-9/_+=.@-]{1,512}"
_SECRETS_MANAGER_ARN = r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+"
_EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s]+"


@dataclass(frozen=True, kw_only=True)
class UltraConfig:
    """Everything UltraStack is built from; see docs/ultra-stack.md for each key."""

    vpc_id: str
    public_subnet_ids: tuple[str, ...]
    availability_zones: tuple[str, ...]
    worker_subnet_id: str
    worker_availability_zone: str
    database_secret: str | None
    worker_cpu: int
    worker_memory_mib: int
    cpu_architecture_name: str
    on_demand_base: int
    on_demand_weight: int
    log_retention: logs.RetentionDays
    log_level: str
    api: str
    alarm_email: str | None
    queue_visibility_timeout_seconds: int
    queue_max_receive_count: int
    queue_oldest_message_alarm_minutes: int

    @property
    def database_secret_is_arn(self) -> bool:
        """Whether `database_secret` is an ARN rather than a name."""
        return bool(self.database_secret and self.database_secret.startswith("arn:"))

    @property
    def arm64(self) -> bool:
        """Whether the images and tasks are built for ARM64."""
        return self.cpu_architecture_name == "ARM64"

    @classmethod
    def from_context(cls, raw: Any) -> UltraConfig:
        """Build the config from the `ultra` context block, or raise one `ConfigError`."""
        reader = ContextReader(CONTEXT_KEY, raw)

        vpc_id = reader.string(
            "vpcId", default="", pattern=_VPC_ID, expected="a VPC id such as vpc-0a1b2c3d"
        )
        if not isinstance(raw, Mapping) or "vpcId" not in raw:
            reader.problem("vpcId", None, "a VPC id such as vpc-0a1b2c3d")
        subnet_ids = reader.string_list(
            "publicSubnetIds",
            pattern=_SUBNET_ID,
            expected="public subnet ids such as subnet-0a1b2c3d",
            minimum=1,
        )
        zones = reader.string_list(
            "availabilityZones",
            pattern=_AVAILABILITY_ZONE,
            expected="availability zone names such as us-east-1a",
            minimum=1,
        )
        chosen = reader.optional_string(
            "workerSubnetId", pattern=_SUBNET_ID, expected="one of ultra.publicSubnetIds"
        )
        database_secret = reader.optional_string(
            "databaseSecret",
            pattern=f"{_SECRETS_MANAGER_ARN}|(?!arn:){_SECRETS_MANAGER_NAME}",
            expected="the name or ARN of a Secrets Manager secret holding the database URL",
        )
        cpu, memory = reader.fargate_size(
            "workerCpu", "workerMemoryMiB", default_cpu=256, default_memory=512
        )
        architecture = reader.choice(
            "cpuArchitecture", default="X86_64", allowed=tuple(ARCHITECTURES)
        )
        on_demand_base = reader.integer("onDemandBase", default=0, minimum=0, maximum=100_000)
        on_demand_weight = reader.integer("onDemandWeight", default=0, minimum=0, maximum=1000)
        log_retention = reader.log_retention("logRetentionDays", default=7)
        log_level = reader.choice(
            "logLevel", default="INFO", allowed=("DEBUG", "INFO", "WARNING", "ERROR")
        )
        api = reader.choice("api", default="lambda", allowed=("lambda", "none"))
        alarm_email = reader.optional_string(
            "alarmEmail", pattern=_EMAIL, expected="an email address"
        )
        visibility = reader.integer(
            "queueVisibilityTimeoutSeconds", default=120, minimum=30, maximum=43_200
        )
        max_receives = reader.integer("queueMaxReceiveCount", default=5, minimum=1, maximum=1000)
        oldest_minutes = reader.integer(
            "queueOldestMessageAlarmMinutes", default=15, minimum=1, maximum=1440
        )

        worker_subnet_id, worker_zone = _worker_subnet(reader, subnet_ids, zones, chosen)
        reader.finish()
        return cls(
            vpc_id=vpc_id,
            public_subnet_ids=subnet_ids,
            availability_zones=zones,
            worker_subnet_id=worker_subnet_id,
            worker_availability_zone=worker_zone,
            database_secret=database_secret,
            worker_cpu=cpu,
            worker_memory_mib=memory,
            cpu_architecture_name=architecture,
            on_demand_base=on_demand_base,
            on_demand_weight=on_demand_weight,
            log_retention=log_retention,
            log_level=log_level,
            api=api,
            alarm_email=alarm_email,
            queue_visibility_timeout_seconds=visibility,
            queue_max_receive_count=max_receives,
            queue_oldest_message_alarm_minutes=oldest_minutes,
        )


def _worker_subnet(
    reader: ContextReader,
    subnet_ids: tuple[str, ...],
    zones: tuple[str, ...],
    chosen: str | None,
) -> tuple[str, str]:
    """The subnet the worker tasks run in and its zone, checked against the lists."""
    if subnet_ids and zones and len(subnet_ids) != len(zones):
        reader.problems.append(
            f"{CONTEXT_KEY}.availabilityZones: got {show(list(zones))}, expected one zone per"
            f" entry of {CONTEXT_KEY}.publicSubnetIds ({len(subnet_ids)}), in the same order"
        )
        return "", ""
    if chosen is not None and subnet_ids and chosen not in subnet_ids:
        reader.problem("workerSubnetId", chosen, f"one of {show(list(subnet_ids))} or null")
        return "", ""
    if not subnet_ids or not zones:
        return "", ""
    index = subnet_ids.index(chosen) if chosen else 0
    return subnet_ids[index], zones[index]
