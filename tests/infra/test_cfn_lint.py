"""cfn-lint on every synthesized template: no error, no warning beyond the ignored rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cfnlint.config import ConfigMixIn
from cfnlint.runner import Runner

from tests.infra.conftest import REPO_ROOT, Synthesized

CONFIG = REPO_ROOT / ".cfnlintrc.yaml"


@pytest.fixture(scope="module")
def findings(synthesized_app: Synthesized, variant_app: Synthesized) -> dict[Path, list[str]]:
    """Template -> cfn-lint findings, for every stack of both configurations (one run)."""
    templates = [
        app.outdir / f"{stack}.template.json"
        for app in (synthesized_app, variant_app)
        for stack in app.stack_names()
    ]
    config = ConfigMixIn(["--config-file", str(CONFIG), *map(str, templates)])
    found: dict[Path, list[str]] = {template: [] for template in templates}
    for match in Runner(config).run():
        found[Path(match.filename)].append(
            f"{match.rule.id} line {match.linenumber}: {match.message}"
        )
    return found


def test_every_ignored_rule_has_a_reason() -> None:
    lines = CONFIG.read_text().splitlines()
    ignored = yaml.safe_load(CONFIG.read_text())["ignore_checks"]

    assert ignored, "nothing ignored: drop the config instead"
    for rule in ignored:
        index = next(i for i, line in enumerate(lines) if line.strip() == f"- {rule}")
        assert lines[index - 1].strip().startswith("#"), f"{rule} needs a comment saying why"


def test_every_template_passes_cfn_lint(findings: dict[Path, list[str]]) -> None:
    assert len(findings) == 4  # both stacks, both configurations
    assert {str(template): problems for template, problems in findings.items() if problems} == {}


def test_the_configuration_still_reports_real_problems(tmp_path: Path) -> None:
    # Guards against a config that silences everything: a broken queue must be reported.
    broken = tmp_path / "broken.template.json"
    broken.write_text(
        '{"Resources": {"Queue": {"Type": "AWS::SQS::Queue",'
        ' "Properties": {"VisibilityTimeout": "soon", "Colour": "blue"}}}}'
    )
    config = ConfigMixIn(["--config-file", str(CONFIG), str(broken)])

    rules = {match.rule.id for match in Runner(config).run()}

    assert {"E3002", "E3012"} <= rules
