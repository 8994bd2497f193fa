"""`helm install` of charts/kuberank on a real control plane of its own, and the operator running
with the chart's ServiceAccount token: the real RBAC authorizer answers each of its calls.

One scenario drives the operator through every feature a rule of the chart's RBAC is there
for. KEDA's, prometheus-operator's and cert-manager's own CRDs are installed
(tests/operator/upstream_crds/), so ScaledObjects, ServiceMonitors and Certificates are made
and removed for real; the API server's audit log records every request the operator made.
It must make no forbidden call. Then the same requests are put to the real authorizer
(SubjectAccessReviews) on behalf of users bound to the roles helm installed less one rule,
and less one verb of one rule: each must be denied some request, or that rule (verb) grants
nothing the operator needs. Twice: as installed (one ClusterRole, every namespace watched),
and after `helm upgrade --set watchNamespaces={search}` (a Role there, and a ClusterRole for
what has no namespace: CRDs and the namespaces Kopf follows).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scripts.control_plane.cluster import ControlPlane, kubeconfig_yaml
from scripts.upstream_crds import UPSTREAM_CRDS
from tests.charts.rendering import HELM, OPERATOR_CHART
from tests.operator.harness import (
    AUTOSCALERS,
    CERTIFICATES,
    CLAIMS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    NETWORK_POLICIES,
    RERANKERS,
    SCALED_OBJECTS,
    SECRETS,
    SERVICE_MONITORS,
    SERVICES,
    jwt_secret,
    reranker,
)
from tests.operator.real_cluster import RESTRICTED, AuditEntry, AuditLog, Cluster, OperatorProcess

from kuberank_contract import LABEL_MANAGED_BY
from kuberank_operator.builders.scaled_object import KEDA_MANAGER
from kuberank_operator.kube import Resource

pytestmark = [pytest.mark.control_plane, pytest.mark.helm]

RELEASE_NAMESPACE = "kuberank"
WORK_NAMESPACE = "search"
ACCOUNT = "kuberank-operator"  # the chart's ServiceAccount for release `kuberank`
ACCOUNT_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{ACCOUNT}"
ACCOUNT_GROUPS = ("system:serviceaccounts", f"system:serviceaccounts:{RELEASE_NAMESPACE}")
CHILDREN = (DEPLOYMENTS, SERVICES, AUTOSCALERS, DISRUPTION_BUDGETS)
RBAC = "/apis/rbac.authorization.k8s.io/v1"
Rule = dict[str, Any]


@pytest.fixture(scope="module")
def installed(artifacts_dir: Path) -> Iterator[ControlPlane]:
    """A control plane of its own (the session's has the CRD without helm's ownership, and no
    ServiceMonitor API, which its tests rely on), KEDA's, prometheus-operator's and
    cert-manager's CRDs, and the chart installed by `helm install` into a namespace enforcing
    Pod Security `restricted`."""
    logs = artifacts_dir / "control-plane-helm"
    with (
        tempfile.TemporaryDirectory(prefix="kuberank-helm-") as workdir,
        ControlPlane.start(Path(workdir), logs) as cp,
    ):
        cp.add_node("gpu-node-1", gpus=1)
        cp.add_node("cpu-node-1", gpus=0)  # for the operator's own pod
        with cp.client() as admin:
            for name in (RELEASE_NAMESPACE, WORK_NAMESPACE):
                admin.post(
                    "/api/v1/namespaces",
                    json={"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": name, "labels": RESTRICTED}},
                ).raise_for_status()  # fmt: skip
        for crd in UPSTREAM_CRDS:
            cp.kubectl("apply", "--server-side", "-f", str(crd.copy))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd", "--all")
        subprocess.run(
            [str(HELM), "install", "kuberank", str(OPERATOR_CHART), "--namespace",
             RELEASE_NAMESPACE, "--kubeconfig", str(cp.kubeconfig), "--wait", "--timeout", "2m"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        yield cp


def account_kubeconfig(cp: ControlPlane) -> Path:
    """A kubeconfig with a token of the chart's ServiceAccount (TokenRequest, as a pod gets)."""
    with cp.client() as admin:
        response = admin.post(
            f"/api/v1/namespaces/{RELEASE_NAMESPACE}/serviceaccounts/{ACCOUNT}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": 3600}},
        )  # fmt: skip
    response.raise_for_status()
    path = cp.workdir / "kubeconfigs" / "chart-account.kubeconfig"
    path.write_text(kubeconfig_yaml(cp.server, cp.pki.ca_cert, response.json()["status"]["token"]))
    return path


def _ready(kube: Cluster, name: str) -> bool:
    conditions = (kube.get(RERANKERS, name) or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _gone(kube: Cluster, resource: Resource, name: str) -> bool:
    """Deleted, or on its way (a claim waits for the pvc-protection controller, not run here)."""
    live = kube.get(resource, name)
    return live is None or "deletionTimestamp" in live["metadata"]


def _owners(live: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((live or {}).get("metadata", {}).get("ownerReferences") or [])


def _drive_every_feature(kube: Cluster, name: str) -> None:
    """Each step needs rules the ones before did not; the children are created by server-side
    apply (a PATCH that creates: `patch` and `create` both checked)."""
    everything = {
        "autoscaling": {"driver": "hpa"},  # KEDA's API is served: the default would be keda
        "tls": {"issuerRef": {"name": "ca"}},  # a cert-manager Certificate
        "network": {},  # a NetworkPolicy; the ServiceMonitor is on by default
    }
    kube.create(RERANKERS, reranker(name, **everything))
    for resource in (*CHILDREN, SERVICE_MONITORS, CERTIFICATES, NETWORK_POLICIES):
        kube.wait_until(lambda r=resource: kube.get(r, name), f"the {resource.plural}")
    kube.wait_until(lambda: _ready(kube, name), "Ready", within=60)  # pods watched, status
    kube.delete(SERVICES, name)
    kube.wait_until(lambda: kube.get(SERVICES, name), "the Service put back")
    # A model cache claim; KEDA's ScaledObject takes the HPA over, and gives it back.
    spec = {"model": {"cache": {}}, "autoscaling": {"driver": "keda"}}
    kube.patch(RERANKERS, name, {"spec": spec})
    kube.wait_until(lambda: kube.get(CLAIMS, name), "the cache claim")
    scaled = kube.wait_until(lambda: kube.get(SCALED_OBJECTS, name), "the ScaledObject")
    # STAND-IN for KEDA's operator (not run here yet): it makes the HPA the ScaledObject names
    # its own (tests/operator/test_keda_on_control_plane.py plays the whole update).
    keda = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": name,
            "uid": scaled["metadata"]["uid"], "controller": True}  # fmt: skip
    kube.patch(
        AUTOSCALERS,
        name,
        {"metadata": {"ownerReferences": [keda], "labels": {LABEL_MANAGED_BY: KEDA_MANAGER}}},
    )
    kube.patch(RERANKERS, name, {"spec": {"autoscaling": {"driver": "hpa"}}})
    kube.wait_until(lambda: kube.get(SCALED_OBJECTS, name) is None, "the ScaledObject deleted")
    kube.wait_until(  # orphaned by the real garbage collector, then adopted by the operator
        lambda: (
            [ref["kind"] for ref in _owners(kube.get(AUTOSCALERS, name))] == ["RerankerService"]
        ),
        "the HPA taken back",
    )
    # Every optional child turned off: each deleted by the operator.
    off = {
        "model": {"cache": None},
        "autoscaling": {"enabled": False},
        "monitoring": {"serviceMonitor": False},
        "tls": None,
        "network": None,
    }
    kube.patch(RERANKERS, name, {"spec": off})
    for resource in (CLAIMS, AUTOSCALERS, SERVICE_MONITORS, CERTIFICATES, NETWORK_POLICIES):
        kube.wait_until(lambda r=resource: _gone(kube, r, name), f"the {resource.plural} deleted")
    kube.delete(RERANKERS, name)  # the finalizer comes off; the garbage collector follows
    kube.wait_until(lambda: not any(kube.get(r, name) for r in CHILDREN), "children gone", 60)


@dataclasses.dataclass(frozen=True)
class Scenario:
    watch: str  # the namespace the operator watches; "" for all (the chart's default)
    requests: list[AuditEntry]  # the chart account's, while it ran
    grants: list[Grant]  # the roles bound to the chart's account then


@pytest.fixture(
    scope="module", params=["", WORK_NAMESPACE], ids=["every-namespace", "one-namespace"]
)
def scenario(installed: ControlPlane, request: pytest.FixtureRequest) -> Scenario:
    """The operator, watching what the install says, goes through `_drive_every_feature`."""
    cp, watch = installed, str(request.param)
    if watch:
        subprocess.run(
            [str(HELM), "upgrade", "kuberank", str(OPERATOR_CHART), "--namespace",
             RELEASE_NAMESPACE, "--kubeconfig", str(cp.kubeconfig), "--set",
             f"watchNamespaces={{{watch}}}", "--wait", "--timeout", "2m"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    with cp.client(timeout=30) as http:
        log = cp.logs / f"operator-chart-account-{watch or 'all'}.log"
        operator = OperatorProcess(cp, watch, log, account_kubeconfig(cp))
        audit = AuditLog(cp.audit_log)
        kube = Cluster(cp, WORK_NAMESPACE, operator, audit, http)
        kube.wait_until(
            lambda: cp.get(f"/api/v1/namespaces/{WORK_NAMESPACE}/serviceaccounts/default"),
            "the default ServiceAccount",
        )
        if kube.get(SECRETS, jwt_secret()["metadata"]["name"]) is None:
            kube.create(SECRETS, jwt_secret())
        mark = audit.mark()
        operator.start()
        try:
            # Its own name: the last scenario's claim stays (terminating) and is not this one's.
            _drive_every_feature(kube, f"ranker-{watch or 'all'}")
        finally:
            operator.stop()
        return Scenario(watch, audit.operator_requests(mark, user=ACCOUNT_USER), grants_of(http))


# ---- the authorizer's view ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Request:
    """What RBAC decides on: one resource request, as the audit log recorded it."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str

    def __str__(self) -> str:
        resource = "/".join(filter(None, (self.resource, self.subresource)))
        words = (self.verb, self.group or "core", resource, self.name)
        return " ".join(filter(None, words)) + (f" in {self.namespace}" if self.namespace else "")

    def attributes(self) -> dict[str, str]:
        return {
            "verb": self.verb,
            "group": self.group,
            "resource": self.resource,
            "subresource": self.subresource,
            "namespace": self.namespace,
            "name": self.name,
        }


def needed(entries: list[AuditEntry]) -> list[Request]:
    """Every distinct resource request (discovery's non-resource GETs, open to every
    authenticated user, are left out). A server-side apply that created its object (201) was
    also authorized as a `create`, which the audit log does not show."""
    found: set[Request] = set()
    for entry in entries:
        if not entry.resource:
            continue
        request = Request(
            entry.verb, entry.group, entry.resource, entry.subresource, entry.namespace, entry.name
        )
        found.add(request)
        if entry.verb == "patch" and entry.code == 201:
            found.add(dataclasses.replace(request, verb="create"))
    return sorted(found, key=str)


@dataclasses.dataclass(frozen=True)
class Grant:
    """One role bound to the chart's account: a ClusterRole, or a Role in `namespace`."""

    namespace: str  # "" for a ClusterRole
    rules: list[Rule]

    def __str__(self) -> str:
        return f"the Role in {self.namespace}" if self.namespace else "the ClusterRole"

    def without(self, index: int, verb: str | None = None) -> Grant:
        """Less its rule `index`, or less that rule's `verb` (a rule's last verb: the rule)."""
        rule = self.rules[index]
        verbs = [v for v in rule["verbs"] if verb is not None and v != verb]
        rest = [{**rule, "verbs": verbs}] if verbs else []
        return Grant(self.namespace, self.rules[:index] + rest + self.rules[index + 1 :])


def grants_of(admin: httpx.Client) -> list[Grant]:
    """The roles that helm's bindings grant the chart's ServiceAccount, as installed."""
    account = {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": RELEASE_NAMESPACE}
    grants = []
    for kind in ("clusterrolebindings", "rolebindings"):
        for binding in admin.get(f"{RBAC}/{kind}").json()["items"]:
            subjects = binding.get("subjects") or []
            if not any({k: s.get(k) for k in account} == account for s in subjects):
                continue
            namespace = binding["metadata"].get("namespace", "")
            where = f"/namespaces/{namespace}" if binding["roleRef"]["kind"] == "Role" else ""
            plural = "roles" if where else "clusterroles"
            role = admin.get(f"{RBAC}{where}/{plural}/{binding['roleRef']['name']}").json()
            grants.append(Grant(namespace if where else "", list(role["rules"])))
    return grants


def describe(rule: Rule) -> str:
    return f"{rule['apiGroups']} {rule['resources']} {rule['verbs']}"


def less_one_rule(grants: list[Grant]) -> dict[str, list[Grant]]:
    return {
        f"without {describe(rule)} in {grant}": [*grants[:g], grant.without(i), *grants[g + 1 :]]
        for g, grant in enumerate(grants)
        for i, rule in enumerate(grant.rules)
    }


def less_one_verb(grants: list[Grant]) -> dict[str, list[Grant]]:
    return {
        f"without {verb} of {describe(rule)} in {grant}": [
            *grants[:g], grant.without(i, verb), *grants[g + 1 :]
        ]
        for g, grant in enumerate(grants)
        for i, rule in enumerate(grant.rules)
        for verb in rule["verbs"]
    }  # fmt: skip


@dataclasses.dataclass
class Authorizer:
    """SubjectAccessReviews as the admin, for users bound to roles made here."""

    http: httpx.Client

    def allowed(self, user: str, groups: tuple[str, ...], request: Request) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": [*groups, "system:authenticated"],
                "resourceAttributes": request.attributes(),
            },
        }
        response = self.http.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
        response.raise_for_status()
        return bool(response.json()["status"].get("allowed"))

    def grant(self, user: str, grants: list[Grant]) -> None:
        """Each grant's role and a binding of it to `user` (named after the user)."""
        for index, grant in enumerate(grants):
            kind = "Role" if grant.namespace else "ClusterRole"
            where = f"/namespaces/{grant.namespace}" if grant.namespace else ""
            name = f"{user}-{index}"
            role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                    "metadata": {"name": name}, "rules": grant.rules}  # fmt: skip
            self.http.post(f"{RBAC}{where}/{kind.lower()}s", json=role).raise_for_status()
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": f"{kind}Binding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            }
            self.http.post(f"{RBAC}{where}/{kind.lower()}bindings", json=binding).raise_for_status()


def denials(
    authorizer: Authorizer,
    scenario: Scenario,
    variants: dict[str, list[Grant]],
    prefix: str,
) -> dict[str, Request | None]:
    """For each variant of the grants: the first of the scenario's requests that a user bound
    to it is denied (None when it is allowed them all). A user bound to the unchanged grants
    is made last and must be allowed every request: once the authorizer's caches hold that
    one, they hold every variant, and a denial is the variant's own."""
    prefix = f"{prefix}-{scenario.watch or 'all'}"
    requests = needed(scenario.requests)
    users = {label: f"{prefix}-{i}" for i, label in enumerate(variants)}
    for label, user in users.items():
        authorizer.grant(user, variants[label])
    unchanged = f"{prefix}-unchanged"
    authorizer.grant(unchanged, scenario.grants)
    deadline = time.monotonic() + 30
    while not authorizer.allowed(unchanged, (), requests[0]):
        assert time.monotonic() < deadline, "the RBAC authorizer did not see a new binding in 30 s"
        time.sleep(0.1)
    refused = [r for r in requests if not authorizer.allowed(unchanged, (), r)]
    assert refused == [], f"the unchanged grants, bound to a user, deny {refused}"
    return {
        label: next((r for r in requests if not authorizer.allowed(user, (), r)), None)
        for label, user in users.items()
    }


@pytest.fixture(scope="module")
def authorizer(installed: ControlPlane) -> Iterator[Authorizer]:
    with installed.client(timeout=30) as http:
        yield Authorizer(http)


# ---- the tests ------------------------------------------------------------------------------
def test_the_chart_installs_under_restricted_and_its_rbac_allows_a_whole_scenario(
    installed: ControlPlane, scenario: Scenario, authorizer: Authorizer
) -> None:
    with installed.client() as http:
        # The chart's own operator pod was admitted under `restricted` and runs (on kwok).
        pods = http.get(f"/api/v1/namespaces/{RELEASE_NAMESPACE}/pods").json()["items"]
    assert {p["status"]["phase"] for p in pods} == {"Running"}
    if scenario.watch:  # a Role where it watches; the ClusterRole only for what has no namespace
        assert sorted(g.namespace for g in scenario.grants) == ["", scenario.watch]
        assert {r.namespace for r in scenario.requests} == {"", scenario.watch}
    else:
        assert [g.namespace for g in scenario.grants] == [""]
    assert len(scenario.requests) > 20  # it did run as the chart's ServiceAccount
    forbidden = {(r.verb, r.resource, r.subresource) for r in scenario.requests if r.code == 403}
    assert forbidden == set()
    # Each, and the `create` in each creating apply, allowed the account through helm's binding.
    requests = needed(scenario.requests)
    refused = [r for r in requests if not authorizer.allowed(ACCOUNT_USER, ACCOUNT_GROUPS, r)]
    assert refused == []
    print(f"{len(scenario.requests)} requests, {len(requests)} distinct, all allowed")


def test_removing_any_one_rule_of_the_roles_denies_a_call_of_the_scenario(
    scenario: Scenario, authorizer: Authorizer
) -> None:
    assert sum(len(grant.rules) for grant in scenario.grants) > 10
    found = denials(authorizer, scenario, less_one_rule(scenario.grants), "without-rule")
    for label, request in found.items():
        print(f"{label}: denies {request}")
    assert [label for label, request in found.items() if request is None] == []


def test_removing_any_one_verb_of_a_rule_denies_a_call_of_the_scenario(
    scenario: Scenario, authorizer: Authorizer
) -> None:
    found = denials(authorizer, scenario, less_one_verb(scenario.grants), "without-verb")
    for label, request in found.items():
        print(f"{label}: denies {request}")
    assert [label for label, request in found.items() if request is None] == []


def test_a_server_side_apply_that_creates_is_also_authorized_as_create(
    authorizer: Authorizer,
) -> None:
    """What `needed` assumes of the API server: an apply of an absent object needs `patch`
    and `create` (the audit log shows only the patch)."""
    user = "apply-without-create"
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}]
    authorizer.grant(user, [Grant("", rules)])
    http = authorizer.http
    as_user = {"Impersonate-User": user}
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}}

    def apply() -> httpx.Response:
        return http.patch(
            f"/api/v1/namespaces/{WORK_NAMESPACE}/configmaps/applied",
            content=json.dumps(body),
            params={"fieldManager": "kuberank-tests"},
            headers={"Content-Type": "application/apply-patch+yaml", **as_user},
        )

    deadline = time.monotonic() + 30
    while (refused := apply()).status_code == 403 and "cannot patch" in refused.text:
        assert time.monotonic() < deadline, "the RBAC authorizer did not see the binding"
        time.sleep(0.1)  # the binding is not in the authorizer's cache yet
    assert refused.status_code == 403, refused.text
    assert 'cannot create resource "configmaps"' in refused.json()["message"]
    http.patch(
        f"{RBAC}/clusterroles/{user}-0",
        json={"rules": [{**rules[0], "verbs": ["get", "patch", "create"]}]},
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()
    deadline = time.monotonic() + 30
    while (created := apply()).status_code == 403:
        assert time.monotonic() < deadline, "the RBAC authorizer did not see the new rule"
        time.sleep(0.1)
    assert created.status_code == 201, created.text
