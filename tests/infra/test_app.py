"""The app as the CLI runs it: feature flags, pinned CLI, environments, clean annotations."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import aws_cdk
import pytest

from app import environment_problems, stack_environment
from stacks.config import StandardConfig
from stacks.ultra import SPOT_ARM64_WARNING
from tests.infra.conftest import (
    CLI_VARIABLES,
    REPO_ROOT,
    Synthesized,
    cdk_context,
    synthesize_app,
)


def _recommended_flags() -> dict[str, object]:
    """The flags `cdk init` writes for the installed aws-cdk-lib, from its own package."""
    tarball = next((Path(aws_cdk.__file__).parent / "_jsii").glob("aws-cdk-lib@*.jsii.tgz"))
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("package/recommended-feature-flags.json")
        assert member is not None
        return json.load(member)


def test_cdk_json_sets_every_recommended_feature_flag() -> None:
    context = cdk_context()
    recommended = _recommended_flags()

    assert len(recommended) > 50
    assert {key: context.get(key) for key in recommended} == recommended


def test_cdk_json_runs_the_app_and_package_json_pins_the_cli() -> None:
    cdk_json = json.loads((REPO_ROOT / "cdk.json").read_text())
    package = json.loads((REPO_ROOT / "package.json").read_text())
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())

    assert cdk_json["app"] == "python3 app.py"
    assert package["dependencies"] == {"aws-cdk": "2.1148.1"}
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == "2.1148.1"


def test_stacks_are_environment_agnostic_unless_the_cli_names_one() -> None:
    assert stack_environment({}) is None
    only_region = stack_environment({"CDK_DEFAULT_REGION": "eu-west-1"})
    assert only_region is not None
    assert (only_region.account, only_region.region) == (None, "eu-west-1")


def test_three_zones_need_an_account() -> None:
    config = StandardConfig.from_context({"maxAzs": 3})

    assert environment_problems(config, stack_environment({"CDK_DEFAULT_REGION": "us-east-1"}))
    assert environment_problems(config, None) == [
        "standard.maxAzs: got 3, expected 2 unless CDK_DEFAULT_ACCOUNT and CDK_DEFAULT_REGION "
        "are set (an account-agnostic stack knows only two availability zones)"
    ]
    with_account = stack_environment(
        {"CDK_DEFAULT_ACCOUNT": "123456789012", "CDK_DEFAULT_REGION": "us-east-1"}
    )
    assert environment_problems(config, with_account) == []


def test_account_agnostic_template_uses_the_deploy_account(synthesized_app: Synthesized) -> None:
    text = (synthesized_app.outdir / "StandardStack.template.json").read_text()

    assert '"Ref": "AWS::AccountId"' in text
    assert "123456789012" not in text


def test_warning_annotations_are_seen(tmp_path: Path) -> None:
    # The check above must be able to fail: ARM64 on Spot is a deliberate warning.
    context = cdk_context()
    context["ultra"] = {**context["ultra"], "cpuArchitecture": "ARM64"}

    app = synthesize_app(tmp_path, context=context, variables=CLI_VARIABLES)

    warnings = app.messages("warning")
    assert [path for path, _ in warnings] == ["/UltraStack"]
    assert SPOT_ARM64_WARNING in warnings[0][1]


@pytest.mark.parametrize("fixture", ["synthesized_app", "variant_app"])
def test_no_warning_or_error_annotations(fixture: str, request: pytest.FixtureRequest) -> None:
    # What `cdk synth --strict` refuses: any warning on any construct.
    app: Synthesized = request.getfixturevalue(fixture)

    assert app.messages("warning") == []
    assert app.messages("error") == []
    assert sorted(app.stack_names()) == ["StandardStack", "UltraStack"]
