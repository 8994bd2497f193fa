"""The Kubernetes versions every object kuberank makes must work on, and the check of one
object (import as `tests.kubernetes_versions`; used by the operator's and the charts' tests).

The oldest is the stated minimum, `kuberank_operator.MINIMUM_KUBERNETES_VERSION`; the newest
is the newest kubernetes-validate has schemas for. Schemas alone cannot tell whether an API
server of the minimum version acts on a field: an alpha field is in that version's schema but
dropped or refused while its feature gate is off. GATED_FIELDS names such fields, each with
the first version that has its feature on by default, and the check refuses any newer than
the minimum.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes_validate

from kuberank_operator import MINIMUM_KUBERNETES_VERSION

KUBERNETES_VERSIONS = (f"{MINIMUM_KUBERNETES_VERSION}.0", kubernetes_validate.latest_version())


@dataclass(frozen=True)
class GatedField:
    path: tuple[str, ...]  # the last keys of the field's path; list levels are skipped
    on_by_default_from: str
    feature: str


# Fields of the kinds kuberank makes whose feature gate was off in some supported-looking
# release (Kubernetes' feature-gate table), with the release that turned it on by default.
GATED_FIELDS = (
    GatedField(("x-kubernetes-validations",), "1.25", "CustomResourceValidationExpressions"),
    GatedField(("spec", "unhealthyPodEvictionPolicy"), "1.27", "PDBUnhealthyPodEvictionPolicy"),
    GatedField(
        ("topologySpreadConstraints", "matchLabelKeys"), "1.27", "MatchLabelKeysInPodTopologySpread"
    ),
    GatedField(("initContainers", "restartPolicy"), "1.29", "SidecarContainers"),
    GatedField(("lifecycle", "preStop", "sleep"), "1.30", "PodLifecycleSleepAction"),
    GatedField(("lifecycle", "postStart", "sleep"), "1.30", "PodLifecycleSleepAction"),
    GatedField(("securityContext", "appArmorProfile"), "1.30", "AppArmorFields"),
    GatedField(("x-kubernetes-validations", "optionalOldSelf"), "1.30", "CRDValidationRatcheting"),
    GatedField(("spec", "trafficDistribution"), "1.31", "ServiceTrafficDistribution"),
    GatedField(("versions", "selectableFields"), "1.31", "CustomResourceFieldSelectors"),
    GatedField(("template", "spec", "resources"), "1.34", "PodLevelResources"),
)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def _key_paths(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, str(key))
            yield from _key_paths(item, (*path, str(key)))
    elif isinstance(value, list):
        for item in value:
            yield from _key_paths(item, path)


def gated_fields_in(obj: dict[str, Any]) -> set[GatedField]:
    paths = set(_key_paths(obj))
    return {
        gated
        for gated in GATED_FIELDS
        if any(path[-len(gated.path) :] == gated.path for path in paths)
    }


def needed_kubernetes(obj: dict[str, Any]) -> str:
    """The oldest Kubernetes with every gated field of `obj` on by default."""
    versions = [gated.on_by_default_from for gated in gated_fields_in(obj)]
    return max(versions, key=_version, default="1.0")


def assert_works_on_the_minimum(obj: dict[str, Any]) -> None:
    too_new = sorted(
        f"{'.'.join(gated.path)} ({gated.feature}, on by default from {gated.on_by_default_from})"
        for gated in gated_fields_in(obj)
        if _version(gated.on_by_default_from) > _version(MINIMUM_KUBERNETES_VERSION)
    )
    assert not too_new, (
        f"{obj['kind']} {obj['metadata'].get('name')} uses fields that Kubernetes"
        f" {MINIMUM_KUBERNETES_VERSION}, the stated minimum, leaves off: {', '.join(too_new)}"
    )


def validate_for_supported_kubernetes(obj: dict[str, Any]) -> None:
    """Valid for the minimum's and the newest schemas (strict: no unknown fields), and no
    field that the minimum has off."""
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)
    assert_works_on_the_minimum(obj)
