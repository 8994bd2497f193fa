"""The 3-way merge patch: what differs, removals of what we set before, never handed-over fields."""

from __future__ import annotations

from kuberank_operator.apply import contains, three_way_patch


def test_nothing_to_send_when_live_already_says_it() -> None:
    desired = {"spec": {"ports": [{"name": "http", "port": 8000}], "selector": {"a": "b"}}}
    # The API server added defaults (protocol, clusterIP): still nothing to send.
    live = {
        "spec": {
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
            "selector": {"a": "b"},
            "clusterIP": "10.0.0.7",
        }
    }
    assert three_way_patch(desired, desired, live) == {}


def test_changed_scalars_and_whole_lists_are_sent() -> None:
    last = {"spec": {"image": "a:1", "args": ["--x"]}}
    desired = {"spec": {"image": "a:2", "args": ["--x", "--y"]}}
    live = {"spec": {"image": "a:1", "args": ["--x"], "defaulted": True}}
    assert three_way_patch(last, desired, live) == {
        "spec": {"image": "a:2", "args": ["--x", "--y"]}
    }


def test_a_list_item_that_lost_a_field_is_sent() -> None:
    # `contains` alone would find the new wish in the old live value (it says more).
    last = {"spec": {"tolerations": [{"key": "gpu", "value": "a100", "effect": "NoSchedule"}]}}
    desired = {"spec": {"tolerations": [{"key": "gpu", "effect": "NoSchedule"}]}}
    live = {"spec": {"tolerations": [{"key": "gpu", "value": "a100", "effect": "NoSchedule"}]}}
    assert three_way_patch(last, desired, live) == desired
    peers_before = {"spec": {"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}}
    peers_now = {"spec": {"from": [{"podSelector": {}}]}}
    assert three_way_patch(peers_before, peers_now, peers_before) == peers_now
    # Once applied, nothing more to send.
    assert three_way_patch(desired, desired, live) == {}


def test_fields_we_set_before_and_no_longer_want_are_removed() -> None:
    last = {"spec": {"nodeSelector": {"gpu": "a100", "zone": "a"}, "priorityClassName": "high"}}
    desired = {"spec": {"nodeSelector": {"gpu": "a100"}}}
    live = {
        "spec": {
            "nodeSelector": {"gpu": "a100", "zone": "a"},
            "priorityClassName": "high",
            "schedulerName": "default-scheduler",
        }
    }
    # schedulerName was never ours: left alone.
    assert three_way_patch(last, desired, live) == {
        "spec": {"nodeSelector": {"zone": None}, "priorityClassName": None}
    }


def test_handed_over_fields_are_never_removed() -> None:
    last = {"spec": {"replicas": 2, "paused": False}}
    desired: dict[str, dict[str, object]] = {"spec": {}}
    live = {"spec": {"replicas": 5, "paused": False}}
    patch = three_way_patch(last, desired, live, handed_over=(("spec", "replicas"),))
    assert patch == {"spec": {"paused": None}}


def test_empty_maps_and_lists_match_absent_fields() -> None:
    # The API server drops empty maps and lists; asking for them again would loop forever.
    assert contains(None, {}) and contains(None, []) and contains({"x": 1}, {})
    assert not contains([], [{"a": 1}]) and not contains({"a": 1}, {"a": 2})
    assert not contains([{"a": 1}, {"b": 2}], [{"a": 1}])  # a list is compared whole
