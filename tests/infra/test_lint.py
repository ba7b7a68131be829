"""cfn-lint on the synthesized template: clean but for W3005 (aws-cdk-lib writes a DependsOn on a role that the
function also reaches through GetAtt: redundant, harmless, and not ours to change)."""

from __future__ import annotations

import json
from typing import Any

from cfnlint.api import ManualArgs, lint

from infra.app import FALLBACK_REGION

IGNORED = ["W3005"]
Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name


def test_cfn_lint_is_clean(synthesized: Synthesized) -> None:
    matches = lint(json.dumps(synthesized.template), config=ManualArgs(regions=[FALLBACK_REGION],
                                                                       ignore_checks=IGNORED))
    assert [str(match) for match in matches] == []


def test_cfn_lint_would_report_a_broken_template(synthesized: Synthesized) -> None:
    """The check above can fail: a function with less memory than Lambda's minimum (128 MB) is reported."""
    lid, function = next(iter(synthesized.serving().values()))
    broken = json.loads(json.dumps(function))
    broken["Properties"]["MemorySize"] = 1
    # the function alone, quicker than the whole template (its references dangle, which cfn-lint reports too)
    broken.pop("DependsOn", None)
    matches = lint(json.dumps({"Resources": {lid: broken}}),
                   config=ManualArgs(regions=[FALLBACK_REGION], ignore_checks=IGNORED))
    assert [m for m in matches if m.rule.id == "E3034" and "MemorySize" in m.path], [str(m) for m in matches]
