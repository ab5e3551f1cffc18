#!/usr/bin/env python3
"""The Flow Builder CDK app: StandardStack and UltraStack from the cdk.json context."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from stacks.config import ConfigError, StandardConfig, raise_problems, show
from stacks.standard import StandardStack
from stacks.ultra import UltraStack
from stacks.ultra_config import UltraConfig


def stack_environment(variables: Mapping[str, str]) -> Environment | None:
    """The target account/region when the CLI knows them, else None (environment-agnostic)."""
    account = variables.get("CDK_DEFAULT_ACCOUNT")
    region = variables.get("CDK_DEFAULT_REGION")
    if not account and not region:
        return None
    return Environment(account=account, region=region)


def environment_problems(standard: StandardConfig, env: Environment | None) -> list[str]:
    """Settings the target environment cannot honour."""
    if standard.max_azs > 2 and (env is None or not env.account):
        # Without an account CDK cannot look the zones up and falls back to two.
        return [
            f"standard.maxAzs: got {show(standard.max_azs)}, expected 2 unless "
            "CDK_DEFAULT_ACCOUNT and CDK_DEFAULT_REGION are set (an account-agnostic "
            "stack knows only two availability zones)"
        ]
    return []


def build_app(
    *,
    context: Mapping[str, Any] | None = None,
    outdir: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> App:
    """Validate every context block, then build both stacks with cdk-nag checks on.

    Args:
        context: context to start from (tests pass cdk.json's); the CLI passes its own.
        outdir: where to write the cloud assembly. Default: the CLI's, or a temp dir.
        variables: the environment to read CDK_DEFAULT_ACCOUNT/REGION from.

    Raises:
        ConfigError: listing every invalid setting of every block, before any resource.
    """
    app = App(
        context=dict(context) if context is not None else None,
        outdir=outdir,
        # CDK's built-in template check repeats what cfn-lint checks in `make test` and
        # more than doubles the synth time (about 9 s on 2 cores).
        builtin_cloud_formation_validation=False,
    )
    env = stack_environment(os.environ if variables is None else variables)

    problems: list[str] = []
    standard = ultra = None
    try:
        standard = StandardConfig.from_context(app.node.try_get_context("standard"))
        problems.extend(environment_problems(standard, env))
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        ultra = UltraConfig.from_context(app.node.try_get_context("ultra"))
    except ConfigError as exc:
        problems.extend(exc.problems)
    raise_problems(problems)
    assert standard is not None and ultra is not None

    StandardStack(app, "StandardStack", config=standard, env=env)
    UltraStack(app, "UltraStack", config=ultra, env=env)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    build_app().synth()
