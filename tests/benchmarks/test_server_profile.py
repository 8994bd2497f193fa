"""The profile's attribution of sampled stacks to layers (py-spy's raw format, as it writes it)."""

from __future__ import annotations

from collections import Counter

from benchmarks.server_profile import OTHER, cpu_us_per_layer, layer_samples

LOOP = "Runner.run (asyncio/runners.py:118);Handle._run (asyncio/events.py:84)"
OBSERVER = "RequestObserver.__call__ (kuberank_server/http/middleware.py:98)"
RAW = "\n".join(
    [
        # json.dumps and logging called by the audit trail are the audit record's cost.
        f"thread (11): MainThread;{LOOP};{OBSERVER};AuditTrail._record "
        "(kuberank_server/observability/audit.py:140);_write (kuberank_server/observability/"
        "audit.py:40);dumps (json/__init__.py:231);JSONEncoder.encode (json/encoder.py:200) 6",
        # A metric updated by the observer is the metrics' cost, not the observer's.
        f"thread (11): MainThread;{LOOP};{OBSERVER};MutexValue.inc "
        "(prometheus_client/values.py:20) 3",
        f"thread (11): MainThread;{LOOP};{OBSERVER} 1",
        # Body validation inside FastAPI's handler; the endpoint's auth dependency.
        f"thread (11): MainThread;{LOOP};get_request_handler.<locals>.app (fastapi/routing.py:"
        "420);request_body_to_args (fastapi/dependencies/utils.py:900);validate_python "
        "(pydantic/type_adapter.py:10) 4",
        f"thread (11): MainThread;{LOOP};solve_dependencies (fastapi/dependencies/utils.py:600);"
        "require_principal (kuberank_server/auth/dependency.py:30);decode (jwt/api_jwt.py:300) 5",
        f"thread (11): MainThread;{LOOP} 2",
        "thread (12): MainThread;main (tool.py:3) 1",
        "thread (13): zmq-reader;run (threading.py:900) 7",
    ]
)


def test_each_sample_is_counted_in_the_innermost_layer_on_its_stack() -> None:
    samples = layer_samples(RAW)

    assert samples == Counter(
        {
            "audit record": 6,
            "metrics (prometheus_client)": 3,
            "request observer (id, route metrics, request log)": 1,
            "validate (request body)": 4,
            "auth (credential, scope, rate)": 5,
            "event loop (asyncio)": 2,
            OTHER: 1,
            "thread zmq-reader": 7,
        }
    )


def test_layers_split_the_measured_cpu_by_their_share_of_the_samples() -> None:
    layers = cpu_us_per_layer(Counter({"auth": 1, "audit": 3}), cpu_seconds_spent=0.4, requests=100)

    assert layers == {"audit": 3000.0, "auth": 1000.0}
    assert cpu_us_per_layer(Counter(), 1.0, 1) == {}
