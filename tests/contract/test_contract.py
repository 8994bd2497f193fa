"""The server and the operator agree: every enum, default and bound the CRD offers for a
setting is what the server accepts, and both take them from kuberank_contract."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic.alias_generators import to_camel

from kuberank_contract import JWT_ALGORITHMS, RequestLimits, env_var
from kuberank_server.auth.algorithms import SUPPORTED_ALGORITHMS
from kuberank_server.runtime.settings import ServerSettings

CRD_PATH = Path(__file__).parents[2] / "operator/kuberank_operator/crd/rerankerservices.yaml"
CRD = yaml.safe_load(CRD_PATH.read_text())
SPEC = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
SERVER = ServerSettings.model_json_schema()["properties"]
SERVER_DEFAULTS = ServerSettings.model_construct()

# CRD field (under spec) -> the server setting the operator passes it to.
SETTING_OF = {
    "model.kind": "model_kind",
    "model.instruction": "instruction",
    "model.dtype": "dtype",
    "model.quantization": "quantization",
    "engine.gpuMemoryUtilization": "gpu_memory_utilization",
    "engine.enableChunkedPrefill": "enable_chunked_prefill",
    "engine.enablePrefixCaching": "enable_prefix_caching",
    "engine.maxNumSeqs": "max_num_seqs",
    "engine.extraArgs": "engine_extra_args",
    "engine.parallelism": "parallelism",
    "auth.mode": "auth_mode",
    "auth.algorithms": "jwt_algorithms",
    "auth.requiredScopes": "jwt_required_scopes",
    "auth.issuer": "jwt_issuer",
    "auth.audience": "jwt_audience",
    "auth.jwksURL": "jwks_url",
    **{f"limits.{to_camel(name)}": name for name in RequestLimits.model_fields},
}
# Where the CRD sets a default of its own on purpose (the server's default suits `serve` on a
# laptop, the CRD's a GPU pod): (crd default, server default).
DIFFERENT_DEFAULTS = {"engine.maxNumSeqs": (256, None)}


def crd_field(path: str, spec: dict[str, Any] = SPEC) -> dict[str, Any]:
    node = spec
    for key in path.split("."):
        node = node["properties"][key]
    return node


def server_field(setting: str) -> dict[str, Any]:
    """The setting's schema with `X | None` unwrapped."""
    node: dict[str, Any] = SERVER[setting]
    present = [option for option in node.get("anyOf", []) if option.get("type") != "null"]
    return {**present[0], **node} if len(present) == 1 else node


def _bounds(node: dict[str, Any]) -> dict[str, Any]:
    """Bounds in one notation (OpenAPI 3.0's exclusive flags -> JSON Schema's numbers)."""
    bounds = {key: node[key] for key in ("minimum", "maximum") if key in node}
    for bound in ("Minimum", "Maximum"):
        if node.get(f"exclusive{bound}") is True:
            bounds[f"exclusive{bound}"] = bounds.pop(bound.lower())
        elif f"exclusive{bound}" in node:
            bounds[f"exclusive{bound}"] = node[f"exclusive{bound}"]
    return bounds


def check_field(path: str, spec: dict[str, Any]) -> None:
    crd, server = crd_field(path, spec), server_field(SETTING_OF[path])
    assert crd.get("enum") == server.get("enum"), "enums differ"
    assert _bounds(crd) == _bounds(server), "bounds differ"
    server_default = getattr(SERVER_DEFAULTS, SETTING_OF[path])
    expected = DIFFERENT_DEFAULTS.get(path, (server_default, server_default))
    assert (crd.get("default"), server_default) == expected, "defaults differ"


@pytest.mark.parametrize("path", sorted(SETTING_OF))
def test_crd_field_matches_the_server_setting(path: str) -> None:
    check_field(path, SPEC)


def test_crd_algorithms_are_the_ones_the_server_verifies() -> None:
    crd = crd_field("auth.algorithms")["items"]["enum"]
    assert set(crd) == set(JWT_ALGORITHMS) == SUPPORTED_ALGORITHMS


def test_every_crd_setting_field_is_mapped() -> None:
    """A new field under spec.limits, spec.model or spec.engine must be added here (or be one
    the operator uses itself), so the comparison above cannot silently skip it."""
    operator_only = {
        "model.name", "model.revision", "model.maxModelLen", "model.hfTokenSecretRef",
        "model.cache",
        # A quantity in the CRD, bytes for the server: tests/operator/test_builders.py checks
        # that the operator's value passes the server setting's bound.
        "engine.cpuKvCacheSize",
    }  # fmt: skip
    for section in ("model", "engine", "limits"):
        for key in crd_field(section)["properties"]:
            path = f"{section}.{key}"
            assert path in SETTING_OF or path in operator_only, f"{path} is not compared"


@pytest.mark.parametrize(
    ("path", "key", "drifted", "message"),
    [
        ("model.dtype", "enum", ["auto", "int4"], "enums differ"),
        ("limits.maxDocuments", "minimum", 0, "bounds differ"),
        ("limits.maxQueuedRequests", "default", 512, "defaults differ"),
    ],
)
def test_drift_is_caught(path: str, key: str, drifted: object, message: str) -> None:
    """The comparison can fail: a CRD that offers what the server does not accept."""
    spec = copy.deepcopy(SPEC)
    crd_field(path, spec)[key] = drifted
    with pytest.raises(AssertionError, match=message):
        check_field(path, spec)


def test_env_names_come_from_the_settings_prefix() -> None:
    assert env_var("max_documents") == "KUBERANK_MAX_DOCUMENTS"
    assert ServerSettings.model_config["env_prefix"] == env_var("")
