"""The operator benchmark's own steps, small: three services on the real control plane."""

from __future__ import annotations

import pytest

from benchmarks import operator_bench
from kuberank_operator.kube import USER_AGENT

pytestmark = pytest.mark.control_plane

SERVICES = 3


def test_a_small_burst_then_steady_state_counts_what_the_operator_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(operator_bench, "QUIET_SECONDS", 5.0)
    monkeypatch.setattr(operator_bench, "LATENCY_SAMPLES", 0)
    with operator_bench.control_plane(SERVICES) as bench:
        burst = operator_bench.burst(bench, SERVICES)
        mark = bench.audit.mark()
        steady = operator_bench.steady_state(bench, SERVICES)
        # Our client's look-ups of which APIs are served (Kopf makes its own at start).
        ours = [r for r in bench.operator_requests(mark) if r.user_agent == USER_AGENT]
    assert burst["ready_s"] >= burst["children_s"] > 0
    # An apply per child (Deployment, Service, PDB, ServiceMonitor) and status writes.
    assert burst["requests_per_service_by_verb"]["patch"] >= len(operator_bench.CHILDREN)
    assert steady["quiet_minute_requests"] == 0
    # A full reconcile writes nothing, reads the Secret and each kind of child once, and
    # looks up each optional API once for all services, not once per service.
    assert steady["resync_pass_writes"] == 0
    per_service = steady["resync_pass_per_service"]
    assert per_service["get secrets"] == 1.0
    assert per_service["get services"] == 1.0
    # ServiceMonitors, Certificates and ScaledObjects: one look-up each.
    assert len([r for r in ours if not r.resource]) == 3
    assert 0 < steady["steady_requests_per_service_per_min"] < 3
