"""Stand-in for prometheus-adapter's query building, for tests that run its rules' queries on a
real Prometheus or promtool (the adapter itself runs on the real control plane)."""

from __future__ import annotations

from typing import Any

import yaml
from scripts import generate


def shipped_adapter_rules() -> list[dict[str, Any]]:
    """The rules our prometheus-adapter values install."""
    return list(yaml.safe_load(generate.ADAPTER_VALUES.read_text())["rules"]["custom"])


def render_adapter_query(rule: dict[str, Any], namespace: str, pods: list[str]) -> str:
    """prometheus-adapter's query for a Pods metric (pkg/naming/metrics_query.go): <<.Series>>
    is the series name, <<.LabelMatchers>> the namespace label equal to the namespace and the
    pod label equal to the pod (a regex of pods joined by | when several), <<.GroupBy>> the pod
    label; the template uses << >> delimiters."""
    labels = {
        override["resource"]: label for label, override in rule["resources"]["overrides"].items()
    }
    series = rule["seriesQuery"].split("{", 1)[0]
    pod_matcher = (
        f'{labels["pod"]}="{pods[0]}"' if len(pods) == 1 else f'{labels["pod"]}=~"{"|".join(pods)}"'
    )
    arguments = {
        "Series": series,
        "LabelMatchers": f'{labels["namespace"]}="{namespace}",{pod_matcher}',
        "GroupBy": labels["pod"],
    }
    query: str = rule["metricsQuery"]
    for name, value in arguments.items():
        query = query.replace(f"<<.{name}>>", value)
    assert "<<" not in query, f"template field the stand-in does not know: {query}"
    return query
