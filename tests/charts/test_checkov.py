"""checkov's Kubernetes policies pass on everything the charts render, in every scenario.

One checkov run (it is slow to start) over a folder of rendered files. The few checks that
are skipped are skipped on the objects themselves, each with its reason, as
`checkov.io/skipN: CKV_K8S_xx=reason` annotations in the templates.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.charts.rendering import (
    MONITORING_CHART,
    OPERATOR_CHART,
    REPO_ROOT,
    render_text,
    scenarios,
)

pytestmark = pytest.mark.helm

CHECKOV = REPO_ROOT / ".tools" / "checkov" / "bin" / "checkov"


def test_checkov_passes_on_every_rendered_scenario(tmp_path: Path) -> None:
    for chart, namespace in ((OPERATOR_CHART, "kuberank"), (MONITORING_CHART, "monitoring")):
        for values in scenarios(chart):
            rendered = render_text(chart, "-f", str(values), namespace=namespace)
            (tmp_path / f"{chart.name}-{values.stem}.yaml").write_text(rendered)
    result = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--compact",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']})"
        for check in report["results"]["failed_checks"]
    ]
    assert failed == [] and summary["failed"] == 0, "\n".join(failed)
    assert summary["passed"] > 500, summary  # the policies did run, on every scenario
    skipped = {check["check_id"] for check in report["results"]["skipped_checks"]}
    assert skipped == {"CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_38", "CKV_K8S_43"}, skipped
    for check in report["results"]["skipped_checks"]:
        assert check["check_result"]["suppress_comment"], f"{check['check_id']} has no reason"
