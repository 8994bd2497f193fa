"""When a child needs an apply: what the live object lacks, or fields we own and no longer want."""

from __future__ import annotations

from typing import Any

from kuberank_operator.apply import contains, needs_apply, unwanted_fields
from kuberank_operator.builders import DEPLOYMENT, SERVICE


def managed(fields: dict[str, Any], manager: str = "kuberank-operator") -> list[dict[str, Any]]:
    return [
        {"manager": manager, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": fields}
    ]


def test_nothing_to_apply_when_live_already_says_it() -> None:
    desired = {"spec": {"ports": [{"name": "http", "port": 8000}], "selector": {"a": "b"}}}
    owned = {"f:spec": {"f:ports": {'k:{"port":8000,"protocol":"TCP"}': {".": {}, "f:name": {}}},
                        "f:selector": {}}}  # fmt: skip
    # The API server added defaults (protocol, clusterIP): still nothing to send.
    live = {
        "metadata": {"managedFields": managed(owned)},
        "spec": {
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
            "selector": {"a": "b"},
            "clusterIP": "10.0.0.7",
        },
    }
    assert not needs_apply(SERVICE, desired, live)


def test_a_changed_value_or_a_list_that_differs_needs_an_apply() -> None:
    live = {"spec": {"image": "a:1", "args": ["--x"], "defaulted": True}}
    assert needs_apply(DEPLOYMENT, {"spec": {"image": "a:2"}}, live)
    assert needs_apply(DEPLOYMENT, {"spec": {"args": ["--x", "--y"]}}, live)
    assert not needs_apply(DEPLOYMENT, {"spec": {"image": "a:1", "args": ["--x"]}}, live)


def test_fields_we_own_and_no_longer_want_are_found() -> None:
    owned = {
        "f:metadata": {"f:labels": {"f:team": {}, "f:app": {}}},
        "f:spec": {
            "f:nodeSelector": {"f:gpu": {}, "f:zone": {}},
            "f:priorityClassName": {},
            "f:containers": {'k:{"name":"server"}': {"f:image": {}, "f:args": {}}},
            "f:finalizers": {'v:"a"': {}},
        },
    }
    desired = {
        "metadata": {"labels": {"app": "x"}},
        "spec": {
            "nodeSelector": {"gpu": "a100"},
            "containers": [{"name": "server", "image": "i"}],
            "finalizers": ["b"],
        },
    }
    assert sorted(unwanted_fields(owned, desired)) == [
        ("metadata", "labels", "team"),
        ("spec", "containers", 'k:{"name":"server"}', "args"),
        ("spec", "finalizers", 'v:"a"'),
        ("spec", "nodeSelector", "zone"),
        ("spec", "priorityClassName"),
    ]
    # schedulerName or a foreign label were never ours: what others own is no reason to apply.
    live = {
        "metadata": {"labels": {"app": "x", "theirs": "y"}, "managedFields": managed(owned)},
        "spec": {"nodeSelector": {"gpu": "a100"}, "schedulerName": "default-scheduler"},
    }
    assert needs_apply(DEPLOYMENT, {"metadata": {"labels": {"app": "x"}}}, live)


def test_handed_over_fields_alone_are_no_reason_to_apply() -> None:
    live = {
        "metadata": {"managedFields": managed({"f:spec": {"f:replicas": {}, "f:paused": {}}})},
        "spec": {"replicas": 5, "paused": False},
    }
    assert not needs_apply(DEPLOYMENT, {"spec": {"paused": False}}, live)
    assert needs_apply(SERVICE, {"spec": {"paused": False}}, live)  # nothing handed over there
    # Another manager's field set is not ours.
    live["metadata"]["managedFields"] = managed({"f:spec": {"f:x": {}}}, manager="kubectl")
    assert not needs_apply(SERVICE, {"spec": {"paused": False}}, live)


def test_empty_maps_and_lists_match_absent_fields() -> None:
    # The API server drops empty maps and lists; asking for them again would loop forever.
    assert contains(None, {}) and contains(None, []) and contains({"x": 1}, {})
    assert not contains([], [{"a": 1}]) and not contains({"a": 1}, {"a": 2})
    assert not contains([{"a": 1}, {"b": 2}], [{"a": 1}])  # a list is compared whole
