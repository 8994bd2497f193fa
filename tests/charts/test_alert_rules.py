"""The monitoring chart's rules, checked and unit-tested by the real promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.charts.rendering import MONITORING_CHART

pytestmark = pytest.mark.prometheus

RULES_FILE = MONITORING_CHART / "files/rules/kuberank.rules.yaml"
UNIT_TESTS = Path(__file__).parent / "promtool" / "kuberank.rules.test.yaml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make tools` installs Debian's prometheus package"
    return subprocess.run([promtool, *args], capture_output=True, text=True, check=False)


def _alert_names() -> set[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_promtool_check_rules_accepts_the_rule_file() -> None:
    result = _promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 16 rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert has an evaluation where it must fire and one where it must not (before its
    `for:` has run out); its firing cases also have neighbours that must stay silent, since
    promtool requires the firing alerts to match exactly."""
    firing: set[str] = set()
    silent: set[str] = set()
    for group in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
    alerts = _alert_names()
    assert alerts == {
        "KuberankHighErrorRate",
        "KuberankHighLatencyP99",
        "KuberankQueueSaturated",
        "KuberankConcurrencyAboveTarget",
        "KuberankAutoscalerAtMaxReplicas",
        "KuberankNoReadyReplicas",
        "KuberankOperatorUnavailable",
    }
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested silent"


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The unit tests can fail: the same file expecting 91 % where the rules give 90 %."""
    broken = UNIT_TESTS.read_text().replace("value: 90\n", "value: 91\n")
    assert broken != UNIT_TESTS.read_text()
    rule_file = tmp_path / "kuberank.rules.yaml"
    shutil.copy(RULES_FILE, rule_file)
    broken = broken.replace(
        "../../../charts/kuberank-monitoring/files/rules/kuberank.rules.yaml", str(rule_file)
    )
    (tmp_path / "broken.test.yaml").write_text(broken)
    result = _promtool("test", "rules", str(tmp_path / "broken.test.yaml"))
    assert result.returncode != 0
    assert "FAILED" in result.stderr and "9.1E+01" in result.stderr
