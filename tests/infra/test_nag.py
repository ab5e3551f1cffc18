"""cdk-nag AwsSolutions: no unacknowledged finding, and every acknowledgement explains itself."""

from __future__ import annotations

import json

import pytest
from aws_cdk import Validations

from tests.infra.conftest import Synthesized

ACKNOWLEDGED_KEY = Validations.ACKNOWLEDGED_RULES_METADATA_KEY


def _acknowledgements(app: Synthesized) -> list[tuple[str, str, str]]:
    """(construct path, finding id, reason) of every acknowledgement in the construct tree."""
    found: list[tuple[str, str, str]] = []
    for construct in app.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == ACKNOWLEDGED_KEY:
                # {"<source>::<finding id>": reason}; CDK acknowledges some template-check
                # findings of its own (CloudFormation-Validate::...), which are not ours.
                found.extend(
                    (construct.node.path, rule_id.split("::", 1)[-1], reason)
                    for rule_id, reason in entry.data.items()
                    if not rule_id.startswith("CloudFormation-Validate::")
                )
    return found


@pytest.mark.parametrize("fixture", ["synthesized_app", "variant_app"])
def test_no_unacknowledged_findings(fixture: str, request: pytest.FixtureRequest) -> None:
    app: Synthesized = request.getfixturevalue(fixture)

    assert app.error is None, app.error
    report = app.outdir / "validation-report.json"
    if report.exists():
        for plugin in json.loads(report.read_text())["pluginReports"]:
            assert plugin["violations"] == [], plugin["pluginName"]


def test_acknowledgements_name_one_finding_and_give_a_reason(
    synthesized_app: Synthesized, variant_app: Synthesized
) -> None:
    acknowledgements = _acknowledgements(synthesized_app) + _acknowledgements(variant_app)

    assert acknowledgements, "expected acknowledgements in the construct metadata"
    for path, finding_id, reason in acknowledgements:
        assert finding_id.startswith("AwsSolutions-"), (path, finding_id)
        assert "*" not in finding_id.split("[")[0], (path, finding_id)
        # A reason states the trade-off: at least a full sentence, not a label.
        assert len(reason) >= 60 and reason.rstrip().endswith("."), (path, finding_id, reason)
