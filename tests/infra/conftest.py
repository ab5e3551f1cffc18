"""Synthesis fixtures for the infrastructure tests.

`synthesized_app` synthesizes the whole app once per session, as `cdk synth` would (cdk.json
context, cdk-nag on); construct modules synthesize their own small stacks once per module
with `synth_stacks`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import App, Environment, Stack
from aws_cdk.assertions import Template

REPO_ROOT = Path(__file__).resolve().parents[2]

# What the CDK CLI passes to the app on a machine without AWS configuration: a region
# (its default) and no account, so stacks stay account-agnostic.
CLI_VARIABLES = {"CDK_DEFAULT_REGION": "us-east-1"}
TEST_ENV = Environment(region="us-east-1")

ASSET_HASH = re.compile(r"[0-9a-f]{64}")
VERSION_ID = re.compile(r"(CurrentVersion[0-9A-F]{8})[0-9a-f]{32}")


def cdk_context() -> dict[str, Any]:
    """The context in cdk.json: feature flags and the stack blocks."""
    return json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


def feature_flags() -> dict[str, Any]:
    """Only the feature flags of cdk.json, for stacks built outside the app."""
    return {key: value for key, value in cdk_context().items() if key.startswith("@aws-cdk")}


@dataclass(frozen=True)
class Synthesized:
    """A synthesized cloud assembly on disk, plus the validation error if synth failed."""

    outdir: Path
    error: str | None
    app: App

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.outdir / "manifest.json").read_text())

    def stack_names(self) -> list[str]:
        """The stacks of the app, by artifact id."""
        return [
            name
            for name, artifact in self.manifest["artifacts"].items()
            if artifact["type"] == "aws:cloudformation:stack"
        ]

    def template(self, stack: str) -> dict[str, Any]:
        return json.loads((self.outdir / f"{stack}.template.json").read_text())

    def assets(self, stack: str) -> dict[str, Any]:
        return json.loads((self.outdir / f"{stack}.assets.json").read_text())

    def messages(self, level: str) -> list[tuple[str, str]]:
        """(construct path, message) of every annotation of `level` in every artifact."""
        found = []
        for artifact in self.manifest["artifacts"].values():
            metadata = dict(artifact.get("metadata", {}))
            # aws-cdk-lib 2.275 writes a stack's metadata to a file of its own.
            if "additionalMetadataFile" in artifact:
                extra = self.outdir / artifact["additionalMetadataFile"]
                metadata.update(json.loads(extra.read_text()))
            for path, entries in metadata.items():
                for entry in entries:
                    if entry["type"] == f"aws:cdk:{level}":
                        found.append((path, str(entry.get("data"))))
        return found


def synthesize_app(
    outdir: Path, *, context: Mapping[str, Any], variables: Mapping[str, str]
) -> Synthesized:
    """Build the app as app.py does and synthesize it into `outdir`."""
    from app import build_app

    app = build_app(context=context, outdir=str(outdir), variables=variables)
    try:
        app.synth()
    except RuntimeError as exc:
        # cdk-nag findings fail the synth after the templates are written.
        return Synthesized(outdir, str(exc), app)
    return Synthesized(outdir, None, app)


@pytest.fixture(scope="session")
def synthesized_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The whole app with the cdk.json context, synthesized once for the session."""
    outdir = tmp_path_factory.mktemp("cdk.out")
    return synthesize_app(outdir, context=cdk_context(), variables=CLI_VARIABLES)


@pytest.fixture(scope="session")
def standard_template(synthesized_app: Synthesized) -> Template:
    """StandardStack of the session app, for assertions."""
    return Template.from_json(synthesized_app.template("StandardStack"))


def synth_stacks(
    builders: Mapping[str, Callable[[Stack], None]], outdir: Path
) -> dict[str, Template]:
    """Build one small stack per builder in one app, synthesize once, return the templates."""
    app = App(context=feature_flags(), outdir=str(outdir), builtin_cloud_formation_validation=False)
    stacks = {}
    for name, build in builders.items():
        stack = Stack(app, name, env=TEST_ENV)
        build(stack)
        stacks[name] = stack
    assembly = app.synth()
    return {
        name: Template.from_json(assembly.get_stack_by_name(stack.stack_name).template)
        for name, stack in stacks.items()
    }


def normalise(template: Any) -> Any:
    """The template with asset hashes and Lambda version hashes replaced by placeholders."""
    text = json.dumps(template, indent=1, sort_keys=True)
    text = ASSET_HASH.sub("<asset-hash>", text)
    text = VERSION_ID.sub(r"\1<hash>", text)
    return json.loads(text)


def only(items: Iterable[Any]) -> Any:
    """The single item, failing when there are none or several."""
    listed = list(items)
    assert len(listed) == 1, f"expected exactly one, got {len(listed)}: {listed}"
    return listed[0]


# A second configuration exercising the other branches: NAT instance, HTTPS, three zones,
# email alarms, a development database. Its account/zones are fixed so synth stays offline.
VARIANT_ACCOUNT = "123456789012"
VARIANT_STANDARD = {
    "maxAzs": 3,
    "natProvider": "instance",
    "certificateArn": (
        f"arn:aws:acm:us-east-1:{VARIANT_ACCOUNT}:certificate/0b1c2d3e-0000-4000-8000-00000000abcd"
    ),
    "alarmEmail": "ops@example.com",
    "databaseMultiAz": False,
    "databaseDeletionProtection": False,
    "databaseSnapshotOnDelete": False,
    "logLevel": "DEBUG",
}


@pytest.fixture(scope="session")
def variant_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The whole app with `VARIANT_STANDARD` and a concrete account, synthesized once."""
    context = cdk_context()
    context["standard"] = {**context["standard"], **VARIANT_STANDARD}
    context[f"availability-zones:account={VARIANT_ACCOUNT}:region=us-east-1"] = [
        "us-east-1a",
        "us-east-1b",
        "us-east-1c",
    ]
    variables = {**CLI_VARIABLES, "CDK_DEFAULT_ACCOUNT": VARIANT_ACCOUNT}
    outdir = tmp_path_factory.mktemp("cdk.out-variant")
    return synthesize_app(outdir, context=context, variables=variables)
