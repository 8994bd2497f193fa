"""Bring one child to its desired state with server-side apply, writing only when needed.

A child is applied whole (field manager `kuberank-operator`, forced): the API server records the
fields we own in `metadata.managedFields`, removes those we stop sending, and leaves every
other field to whoever owns it: the HPA's replica count, other controllers' labels and
annotations, the Service's clusterIP, defaults it filled in. Forcing takes back a field someone
changed under us (drift is put back).

Nothing is sent when the live object already says all we want and we own no field we no longer
want: at steady state a reconcile reads, compares and writes nothing.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from kuberank_operator import FIELD_MANAGER
from kuberank_operator.builders import ChildKind
from kuberank_operator.kube import KubeClient

Path = tuple[str, ...]


class Outcome(enum.Enum):
    CREATED = "Created"
    UPDATED = "Updated"
    DELETED = "Deleted"
    ADOPTED = "Adopted"  # an ownerless object taken over (the HPA KEDA let go of)
    UNCHANGED = "Unchanged"


class ForeignChildError(Exception):
    """An object with the child's name exists but belongs to someone else."""


def _is_empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def contains(live: Any, wanted: Any) -> bool:
    """Whether `live` already says all that `wanted` says (the server may have added more)."""
    if isinstance(wanted, dict):
        if _is_empty(wanted):
            return _is_empty(live) or isinstance(live, dict)
        return isinstance(live, dict) and all(
            contains(live.get(key), value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        if _is_empty(wanted):
            return _is_empty(live)
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(contains(have, want) for have, want in zip(live, wanted, strict=True))
        )
    return bool(live == wanted)


def _keyed_item(items: Any, keys: dict[str, Any]) -> Any:
    """The item of a keyed list (containers by name, ports by port and protocol) that `keys`
    name; a key the item leaves out matches too (the server defaulted it, e.g. protocol TCP)."""
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and all(item.get(k, v) == v for k, v in keys.items()):
            return item
    return None


def unwanted_fields(owned: dict[str, Any], desired: Any, path: Path = ()) -> list[Path]:
    """Fields of our managed field set (FieldsV1: `f:name`, `k:{keys}`, `v:value`) that the
    desired object no longer has: an apply would remove them."""
    found: list[Path] = []
    for key, sub in owned.items():
        if key.startswith("f:"):
            name = key[2:]
            if not isinstance(desired, dict) or name not in desired:
                found.append((*path, name))
            elif isinstance(sub, dict):
                found += unwanted_fields(sub, desired[name], (*path, name))
        elif key.startswith("k:"):
            item = _keyed_item(desired, json.loads(key[2:]))
            if item is None:
                found.append((*path, key))
            elif isinstance(sub, dict):
                found += unwanted_fields(sub, item, (*path, key))
        elif key.startswith("v:"):
            if not isinstance(desired, list) or json.loads(key[2:]) not in desired:
                found.append((*path, key))
    return found


def owned_fields(live: dict[str, Any]) -> dict[str, Any]:
    """Our applied field set, as the API server recorded it."""
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if (
            entry.get("manager") == FIELD_MANAGER
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
        ):
            return dict(entry.get("fieldsV1") or {})
    return {}


def needs_apply(kind: ChildKind, desired: dict[str, Any], live: dict[str, Any]) -> bool:
    if not contains(live, desired):
        return True
    # Handed-over fields (the HPA's replicas) go with the next apply, never on their own.
    unwanted = unwanted_fields(owned_fields(live), desired)
    return any(path not in kind.handed_over for path in unwanted)


def _keep_immutable(
    kind: ChildKind, desired: dict[str, Any], live: dict[str, Any]
) -> dict[str, Any]:
    """The desired object with the spec keys that cannot change after creation as they are.

    (A bound claim's class cannot change; asking would be refused, and leaving a field out
    would ask to remove it.)
    """
    if kind.patchable_spec is None or "spec" not in desired:
        return desired
    spec = {
        key: value if key in kind.patchable_spec else live.get("spec", {}).get(key)
        for key, value in desired["spec"].items()
    }
    return {**desired, "spec": {k: v for k, v in spec.items() if v is not None}}


def is_owned_by(live: dict[str, Any], owner_uid: str) -> bool:
    references = live.get("metadata", {}).get("ownerReferences") or []
    return any(reference.get("uid") == owner_uid for reference in references)


async def converge(
    client: KubeClient,
    kind: ChildKind,
    namespace: str,
    name: str,
    desired: dict[str, Any] | None,
    live: dict[str, Any] | None,
    owner_uid: str,
    *,
    adopt: bool = False,
    propagation: str = "Background",
) -> tuple[Outcome, dict[str, Any] | None]:
    """Apply or delete the child; returns what was done and the child as it is now.

    `adopt`: `live` belongs to no one and is ours to take over (the HPA KEDA let go of); the
    apply makes it ours. `propagation`: how a deletion treats what the child owns."""
    if live is not None and not is_owned_by(live, owner_uid) and not adopt:
        if desired is None:
            return Outcome.UNCHANGED, None  # not ours to delete
        raise ForeignChildError(
            f"a {kind.kind} named {name!r} already exists in namespace {namespace!r} and is not "
            "owned by this RerankerService; delete or rename it"
        )
    if desired is None:
        if live is None or live["metadata"].get("deletionTimestamp"):
            return Outcome.UNCHANGED, None  # gone, or going (finalizers at work)
        await client.delete(kind.resource, namespace, name, propagation)
        return Outcome.DELETED, None
    if live is None:
        return Outcome.CREATED, await client.apply(kind.resource, namespace, name, desired)
    desired = _keep_immutable(kind, desired, live)
    if adopt and not is_owned_by(live, owner_uid):
        return Outcome.ADOPTED, await client.apply(kind.resource, namespace, name, desired)
    if not needs_apply(kind, desired, live):
        return Outcome.UNCHANGED, live
    applied = await client.apply(kind.resource, namespace, name, desired)
    version = applied.get("metadata", {}).get("resourceVersion")
    # An apply that changed nothing leaves the object (and its resourceVersion) as it was.
    unchanged = version is not None and version == live["metadata"].get("resourceVersion")
    return (Outcome.UNCHANGED if unchanged else Outcome.UPDATED), applied
