"""Bring one child to its desired state with as few writes as possible.

Writes are JSON merge patches sent with our field manager. A patch carries only what differs
from the live object, plus `null` for fields we set last time and no longer want (a 3-way
merge against the `kuberank.io/last-applied` annotation, as `kubectl apply` does), so fields
other controllers own are never sent: the HPA's replica count, the Service's clusterIP,
defaults the API server filled in.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from kuberank_operator.builders import ChildKind
from kuberank_operator.kube import ApiError, KubeClient

LAST_APPLIED_ANNOTATION = "kuberank.io/last-applied"

Path = tuple[str, ...]


class Outcome(enum.Enum):
    CREATED = "Created"
    UPDATED = "Updated"
    DELETED = "Deleted"
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


def three_way_patch(
    last: dict[str, Any],
    desired: dict[str, Any],
    live: dict[str, Any],
    handed_over: tuple[Path, ...] = (),
    path: Path = (),
) -> dict[str, Any]:
    """The merge patch taking `live` to `desired`; `last` is what we applied before."""
    patch: dict[str, Any] = {}
    for key, wanted in desired.items():
        have = live.get(key)
        if isinstance(wanted, dict) and isinstance(have, dict):
            previous = last.get(key)
            sub = three_way_patch(
                previous if isinstance(previous, dict) else {},
                wanted,
                have,
                handed_over,
                (*path, key),
            )
            if sub:
                patch[key] = sub
        elif not contains(have, wanted) or (key in last and last[key] != wanted):
            # Also what we now want differently from last time: `contains` accepts a live
            # value saying more (server defaults), so a list item that lost a field, or a
            # peer turned into `{}`, would otherwise never reach the object.
            patch[key] = wanted
    for key in last:
        if key not in desired and key in live and (*path, key) not in handed_over:
            patch[key] = None
    return patch


def _with_last_applied(desired: dict[str, Any]) -> dict[str, Any]:
    record = json.dumps(desired, sort_keys=True, separators=(",", ":"))
    metadata = desired["metadata"]
    annotations = {**metadata.get("annotations", {}), LAST_APPLIED_ANNOTATION: record}
    return {**desired, "metadata": {**metadata, "annotations": annotations}}


def _last_applied(live: dict[str, Any]) -> dict[str, Any]:
    record = live.get("metadata", {}).get("annotations", {}).get(LAST_APPLIED_ANNOTATION)
    try:
        return dict(json.loads(record)) if record else {}
    except ValueError:
        return {}  # hand-edited into garbage: compare against the live object only


def _patchable(kind: ChildKind, manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a manifest that may be patched after creation."""
    if kind.patchable_spec is None or "spec" not in manifest:
        return manifest
    spec = {key: value for key, value in manifest["spec"].items() if key in kind.patchable_spec}
    return {**manifest, "spec": spec}


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
) -> tuple[Outcome, dict[str, Any] | None]:
    """Create, patch or delete the child; returns what was done and the child as it is now."""
    if live is not None and not is_owned_by(live, owner_uid):
        if desired is None:
            return Outcome.UNCHANGED, None  # not ours to delete
        raise ForeignChildError(
            f"a {kind.kind} named {name!r} already exists in namespace {namespace!r} and is not "
            "owned by this RerankerService; delete or rename it"
        )
    if desired is None:
        if live is None:
            return Outcome.UNCHANGED, None
        await client.delete(kind.resource, namespace, name)
        return Outcome.DELETED, None
    full = _with_last_applied(desired)
    if live is None:
        try:
            return Outcome.CREATED, await client.create(kind.resource, namespace, full)
        except ApiError as exc:
            if exc.status != 409:
                raise
            # Someone (an earlier attempt of ours whose answer was lost) made it meanwhile.
            live = await client.get(kind.resource, namespace, name)
            if live is None:
                raise
            return await converge(client, kind, namespace, name, desired, live, owner_uid)
    patch = three_way_patch(
        _patchable(kind, _last_applied(live)), _patchable(kind, full), live, kind.handed_over
    )
    if not patch:
        return Outcome.UNCHANGED, live
    return Outcome.UPDATED, await client.patch(kind.resource, namespace, name, patch)
