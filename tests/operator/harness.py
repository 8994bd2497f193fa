"""kmock's Kubernetes emulator over HTTP, and the real operator in the same process.

The operator runs through `kuberank_operator.cli.run_operator` (what `kuberank-operator`
runs) in a thread with its own event loop, and logs in through its own login handler, from a
kubeconfig that points at the emulator. Every API request the operator makes (Kopf's own
and our client's) is recorded.

API (import as `tests.operator.harness`):

    async with emulated_cluster(tmp_path) as cluster:   # emulator on 127.0.0.1
        await cluster.start_operator()          # OperatorSettings(...) optional
        await cluster.create(RERANKERS, "default", rrs_body)       # test-side writes, HTTP
        deployment = await cluster.wait_for_object(DEPLOYMENTS, "default", "name")
        await cluster.wait_until(lambda: ..., "what we wait for")
        cluster.calls()          # [ApiCall(verb, api_group, resource, subresource, namespace)]
        cluster.calls(since=n)   # only those after the n-th recorded request
        await cluster.stop_operator()

`ApiCall.verb` is an RBAC verb: get, list, watch, create, patch, update, delete. With named
namespaces (`OperatorSettings(namespaces=[...])`) Kopf also lists and watches `namespaces`
(cluster-wide); `calls()` lists those first.
`exercise_every_code_path(cluster)` drives a running operator through every call it makes.
Pods: `server_pod(deployment, name)` makes a pod as the Deployment's ReplicaSet would, and
`unschedulable(...)`, `image_pull_failing(...)`, `crash_looping(...)`, `starting(...)` and
`ready(...)` are pod statuses as the scheduler and the kubelet write them, for
`cluster.patch(PODS, ns, name, {"status": ...}, "status")`.
Test-side requests (the `cluster.create/patch/delete/get` helpers) are not recorded.
`cluster.emulator` is the `kmock.KubernetesEmulator` (its `objects`, fault injection DSL).

What the emulator is not (the real control plane of real_cluster.py shows those): no garbage
collection by ownerReferences, no scheduler, kubelet or
controllers (tests play the Deployment controller by patching `status`, and the ReplicaSet
controller, scheduler and kubelet by creating pods and patching their `status`; the HPA's own
scaling is prometheus-adapter's and Kubernetes' job, checked on kind), no server-side
apply or field ownership (an apply creates an absent object, else is merged as a JSON merge
patch would be: test_server_side_apply.py shows the real thing), no admission (CEL is
evaluated by the spec tests with cel-python). This stand-in adds what Kopf and the operator
rely on from a real API server: metadata.uid, creationTimestamp, resourceVersion, a generation
that moves on spec changes, and `labelSelector` on lists and watches (equality and existence
terms; an object whose labels stop matching is not sent as DELETED, as a real API server does).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import httpx
import kmock
import yaml
from kmock._internal import parsing, rendering

from kuberank_operator.cli import run_operator
from kuberank_operator.kube import Resource
from kuberank_operator.settings import OperatorSettings

CRD_PATH = (
    Path(__file__).resolve().parents[2] / "operator/kuberank_operator/crd/rerankerservices.yaml"
)
TEST_USER_AGENT = "kuberank-tests"
ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}

RERANKERS = Resource("kuberank.io", "v1alpha1", "rerankerservices")
DEPLOYMENTS = Resource("apps", "v1", "deployments")
SERVICES = Resource("", "v1", "services")
AUTOSCALERS = Resource("autoscaling", "v2", "horizontalpodautoscalers")
DISRUPTION_BUDGETS = Resource("policy", "v1", "poddisruptionbudgets")
CLAIMS = Resource("", "v1", "persistentvolumeclaims")
SERVICE_MONITORS = Resource("monitoring.coreos.com", "v1", "servicemonitors")
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "networkpolicies")
CERTIFICATES = Resource("cert-manager.io", "v1", "certificates")
SCALED_OBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects")
PODS = Resource("", "v1", "pods")


JWT_SECRET_NAME = "rerank-jwt"


def reranker(
    name: str = "ranker", *, secret_name: str = JWT_SECRET_NAME, **spec: Any
) -> dict[str, Any]:
    """A RerankerService as a user would write it: a model and its JWT Secret, then `spec`."""
    return {
        "apiVersion": "kuberank.io/v1alpha1",
        "kind": "RerankerService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "Qwen/Qwen3-Reranker-0.6B"},
            "auth": {"secretRef": {"name": secret_name}},
            **spec,
        },
    }


def jwt_secret(name: str = JWT_SECRET_NAME) -> dict[str, Any]:
    """The Secret holding the HS256 key a `reranker` names."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {"secret": "c2VjcmV0LXZhbHVlLWZvci10ZXN0cw=="},
    }


def server_pod(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    """A pod as the Deployment's ReplicaSet makes it: the template's labels and spec, Pending."""
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(template["metadata"]["labels"])},
        "spec": template["spec"],
        "status": {"phase": "Pending"},
    }


# Pod statuses as the scheduler and the kubelet write them (shapes and reasons as a real
# cluster shows them in `kubectl get pod -o yaml`); each replaces the lists of the last.
STARTED_AT = "2026-01-01T00:00:10Z"


def _scheduled_conditions(ready: bool) -> list[dict[str, Any]]:
    when = {"lastProbeTime": None, "lastTransitionTime": STARTED_AT}
    conditions = [
        {"type": kind, "status": "True", **when}
        for kind in ("PodScheduled", "PodReadyToStartContainers", "Initialized")
    ]
    for kind in ("ContainersReady", "Ready"):
        condition = {"type": kind, "status": str(ready), **when}
        conditions.append(condition | ({} if ready else {"reason": "ContainersNotReady"}))
    return conditions


def _container(
    image: str, state: dict[str, Any], *, ready: bool = False, restarts: int = 0, **extra: Any
) -> dict[str, Any]:
    return {
        "name": "server",
        "image": image,
        "imageID": "" if "waiting" in state else f"{image}@sha256:{'0' * 64}",
        "ready": ready,
        "started": "running" in state,
        "restartCount": restarts,
        "state": state,
        **extra,
    }


def unschedulable(message: str) -> dict[str, Any]:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": STARTED_AT,
    }
    return {"phase": "Pending", "conditions": [condition], "containerStatuses": []}


def image_pull_failing(image: str, reason: str = "ImagePullBackOff") -> dict[str, Any]:
    message = (
        f'Back-off pulling image "{image}"'
        if reason == "ImagePullBackOff"
        else f'failed to pull and unpack image "{image}": not found'
    )
    waiting = {"waiting": {"reason": reason, "message": message}}
    return {
        "phase": "Pending",
        "startTime": STARTED_AT,
        "conditions": _scheduled_conditions(False),
        "containerStatuses": [_container(image, waiting)],
    }


def crash_looping(
    image: str,
    *,
    reason: str = "OOMKilled",
    exit_code: int = 137,
    restarts: int = 3,
    message: str | None = None,
    backing_off: bool = True,
) -> dict[str, Any]:
    """Between crashes the kubelet waits (CrashLoopBackOff), then runs the container again."""
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": STARTED_AT,
        "finishedAt": "2026-01-01T00:01:10Z",
    }
    if message:
        terminated["message"] = message
    back_off = f"back-off 40s restarting failed container=server pod=x_y({restarts})"
    state = (
        {"waiting": {"reason": "CrashLoopBackOff", "message": back_off}}
        if backing_off
        else {"running": {"startedAt": "2026-01-01T00:02:00Z"}}
    )
    container = _container(image, state, restarts=restarts, lastState={"terminated": terminated})
    return {
        "phase": "Running",
        "startTime": STARTED_AT,
        "conditions": _scheduled_conditions(False),
        "containerStatuses": [container],
    }


def starting(image: str, started_at: str) -> dict[str, Any]:
    running = {"running": {"startedAt": started_at}}
    return {
        "phase": "Running",
        "startTime": started_at,
        "conditions": _scheduled_conditions(False),
        "containerStatuses": [_container(image, running) | {"started": False}],
    }


def ready(image: str, started_at: str = STARTED_AT) -> dict[str, Any]:
    running = {"running": {"startedAt": started_at}}
    return {
        "phase": "Running",
        "startTime": started_at,
        "conditions": _scheduled_conditions(True),
        "containerStatuses": [_container(image, running, ready=True)],
    }


SECRETS = Resource("", "v1", "secrets")
EVENTS = Resource("", "v1", "events")

_KINDS = {
    RERANKERS: "RerankerService",
    DEPLOYMENTS: "Deployment",
    SERVICES: "Service",
    AUTOSCALERS: "HorizontalPodAutoscaler",
    DISRUPTION_BUDGETS: "PodDisruptionBudget",
    CLAIMS: "PersistentVolumeClaim",
    SERVICE_MONITORS: "ServiceMonitor",
    NETWORK_POLICIES: "NetworkPolicy",
    CERTIFICATES: "Certificate",
    SCALED_OBJECTS: "ScaledObject",
    SECRETS: "Secret",
    EVENTS: "Event",
    PODS: "Pod",
}
_VERBS = {
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.UPDATE: "patch",
    kmock.action.DELETE: "delete",
}


@dataclass(frozen=True, order=True)
class ApiCall:
    verb: str
    api_group: str
    resource: str
    subresource: str  # "" for the object itself
    namespace: str  # "" for cluster-wide requests


def label_selector(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    """A Kubernetes label selector's equality and existence terms (`k=v`, `k==v`, `k!=v`, `k`,
    `!k`, comma-joined) as a test of an object; set terms (`in`, `notin`) are not supported."""
    terms = [term.strip() for term in (selector or "").split(",") if term.strip()]

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for term in terms:
            if "!=" in term:
                key, value = term.split("!=", 1)
                ok = labels.get(key) != value
            elif "=" in term:
                key, value = term.replace("==", "=").split("=", 1)
                ok = labels.get(key) == value
            elif term.startswith("!"):
                ok = term[1:] not in labels
            else:
                ok = term in labels
            if not ok:
                return False
        return True

    return matches


class ApiServerStandIn(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata a real API server maintains."""

    _versions = itertools.count(1)
    # kmock matches each request against its whole request log (quadratic under load): the
    # benchmark turns the log off, keeping only requests in flight.
    record_requests = True

    # kmock cannot parse the URL of the Namespace list (`/api/v1/namespaces`), which Kopf
    # lists and watches when it serves named namespaces; this stand-in answers it itself.
    namespace_calls: list[tuple[int, ApiCall]]

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path.rstrip("/") != "/api/v1/namespaces":
            return await super().__call__(await self._apply_as_create(raw_request))
        watch = raw_request.query.get("watch") == "true"
        if raw_request.headers.get("User-Agent") != TEST_USER_AGENT:
            call = ApiCall("watch" if watch else "list", "", "namespaces", "", "")
            self.namespace_calls.append((len(self._requests), call))
        if not watch:
            names = sorted({ns for _, ns, _ in self.objects if ns})
            items = [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names
            ]
            return aiohttp.web.json_response(
                {"kind": "NamespaceList", "metadata": {"resourceVersion": "1"}, "items": items}
            )
        response = aiohttp.web.StreamResponse()
        await response.prepare(raw_request)
        await asyncio.Event().wait()  # namespaces never change here; ends with the connection
        return response

    async def _apply_as_create(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.BaseRequest:
        """A server-side apply of an absent object creates it: here a POST to its collection
        (recorded as a `create`, which RBAC asks for too). An apply of a present object is
        merged as a JSON merge patch would be: no field ownership here."""
        if raw.method != "PATCH" or not raw.content_type.startswith("application/apply-patch"):
            return raw
        k8s = parsing.parse_path(raw.path)
        resource = kmock.resource(group=k8s.group, version=k8s.version, plural=k8s.plural)
        found = self.objects._objects.get((resource, k8s.namespace, k8s.name))
        if found is not None and not found.deleted:
            return raw
        collection = raw.path.rpartition("/")[0]
        return raw.clone(method="POST", rel_url=raw.rel_url.with_path(collection))

    async def _handle(self, request: rendering.Request) -> Any:
        data = request.data if isinstance(request.data, dict) else None
        if request.action == kmock.action.CREATE and data is not None:
            meta = data.setdefault("metadata", {})
            meta.update(
                uid=str(uuid.uuid4()),
                generation=1,
                resourceVersion=str(next(self._versions)),
                creationTimestamp=datetime.datetime.now(datetime.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            )
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:10]}"
        elif request.action == kmock.action.UPDATE and data is not None and request.resource:
            key = (request.resource, request.namespace, request.name)
            meta = data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(self._versions))
            if key in self.objects and not request.subresource and "spec" in data:
                meta["generation"] = int(self.objects[key]["metadata"].get("generation", 1)) + 1
        try:
            return await super()._handle(request)
        finally:
            if not self.record_requests:
                self._requests.remove(request)

    async def _serve_list(self, request: rendering.Request) -> Any:
        listing = await super()._serve_list(request)
        wanted = label_selector(request.params.get("labelSelector"))
        listing["items"] = [item for item in listing["items"] if wanted(item)]
        return listing

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        wanted = label_selector(request.params.get("labelSelector"))
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or wanted(event.get("object") or {}):
                yield event

    def _KubernetesEmulator__get_objs(  # kmock's name-mangled private method
        self, request: rendering.Request, strict: bool
    ) -> list[Any]:
        # kmock scans every stored object for every request; a named request is one dict
        # lookup. Without this the emulator, not the operator, dominates the benchmark.
        if strict and request.name is not None and request.resource is not None:
            found = self.objects._objects.get((request.resource, request.namespace, request.name))
            return [found] if found is not None else []
        return list(super()._KubernetesEmulator__get_objs(request, strict))  # type: ignore[attr-defined]


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig with no credentials for the emulator at `server` (what Kopf's login reads)."""
    context = {"cluster": "emulator", "user": "operator"}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "emulator",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "operator", "user": {}}],
                "contexts": [{"name": "emulator", "context": context}],
            }
        )
    )
    return path


def _path(
    resource: Resource, namespace: str, name: str | None = None, sub: str | None = None
) -> str:
    return resource.path(namespace, name, sub)


class EmulatedCluster:
    def __init__(self, emulator: ApiServerStandIn, url: str, workdir: Path) -> None:
        self.emulator = emulator
        self.url = url
        # httpx's 5 s default fails a benchmark's burst on a loaded, shared machine.
        self.api = httpx.AsyncClient(
            base_url=url, headers={"User-Agent": TEST_USER_AGENT}, timeout=60
        )
        self._workdir = workdir
        self.serves_keda = f"keda.sh/v1alpha1/{SCALED_OBJECTS.plural}" in emulator.resources
        self._operator: threading.Thread | None = None
        self._stop: threading.Event | None = None

    # ---- the operator ----------------------------------------------------------------------
    async def start_operator(self, settings: OperatorSettings | None = None) -> None:
        """Run the operator in its own thread and event loop, as its own process would.

        (In the emulator's loop, Kopf's shutdown would wait for the emulator's own tasks.)
        """
        assert self._operator is None, "the operator is already running"
        settings = settings or OperatorSettings(liveness_port=0, json_logs=False)
        kubeconfig = write_kubeconfig(self._workdir / "kubeconfig", self.url)
        os.environ["KUBECONFIG"] = str(kubeconfig)
        self._stop, ready = threading.Event(), threading.Event()
        stop = self._stop
        self._operator = threading.Thread(
            target=lambda: asyncio.run(run_operator(settings, stop_flag=stop, ready_flag=ready)),
            name="kuberank-operator",
            daemon=True,
        )
        self._operator.start()
        if not await asyncio.to_thread(ready.wait, 30):
            raise AssertionError("the operator did not start within 30 s")

    async def stop_operator(self) -> None:
        if self._operator is None or self._stop is None:
            return
        self._stop.set()
        try:
            await asyncio.to_thread(self._operator.join, 30)
            assert not self._operator.is_alive(), "the operator did not stop within 30 s"
        finally:
            self._operator = None
            os.environ.pop("KUBECONFIG", None)

    # ---- what the operator did -------------------------------------------------------------
    def calls(self, since: int = 0) -> list[ApiCall]:
        recorded = [call for index, call in self.emulator.namespace_calls if index >= since]
        for request in list(self.emulator)[since:]:
            if request.resource is None or not request.resource.plural:
                continue  # discovery (/api, /apis/group/version): allowed to every user
            if request.headers.get("User-Agent") == TEST_USER_AGENT:
                continue
            verb = _VERBS.get(request.action) if request.action else None
            if verb is None:
                verb = (
                    "update" if request.method == kmock.method.PUT else str(request.method).lower()
                )
            recorded.append(
                ApiCall(
                    verb=verb,
                    api_group=request.resource.group or "",
                    resource=request.resource.plural or "",
                    subresource=request.subresource or "",
                    namespace=request.namespace or "",
                )
            )
        return recorded

    def request_count(self) -> int:
        return len(self.emulator)

    # ---- test-side API access (not recorded) -----------------------------------------------
    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.api.request(method, path, **kwargs)
        response.raise_for_status()
        return dict(response.json())

    async def create(
        self, resource: Resource, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        body = {**body, "metadata": {"namespace": namespace, **body.get("metadata", {})}}
        return await self._call("POST", _path(resource, namespace), json=body)

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self.api.get(_path(resource, namespace, name))
        return None if response.status_code == 404 else dict(response.json())

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return await self._call(
            "PATCH",
            _path(resource, namespace, name, subresource),
            content=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        await self._call("DELETE", _path(resource, namespace, name))

    def objects(self, resource: Resource, namespace: str) -> dict[str, dict[str, Any]]:
        """Live objects of one resource in a namespace, by name (read from the emulator)."""
        found = {}
        for (res, ns, name), obj in list(self.emulator.objects.items()):
            if (
                res.plural == resource.plural
                and res.group == resource.group
                and ns == namespace
                and not obj.deleted
            ):
                found[name] = obj.raw
        return found

    async def wait_until(self, condition: Callable[[], Any], what: str, within: float = 20) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            result = condition()
            if result:
                return result
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {within} s waiting for {what}")
            await asyncio.sleep(0.05)

    async def wait_for_object(
        self, resource: Resource, namespace: str, name: str, within: float = 20
    ) -> dict[str, Any]:
        return await self.wait_until(
            lambda: self.objects(resource, namespace).get(name),
            f"{resource.plural} {namespace}/{name}",
            within,
        )


@contextlib.asynccontextmanager
async def emulated_cluster(
    workdir: Path,
    *,
    service_monitors: bool = True,
    cert_manager: bool = True,
    keda: bool = False,
    record_requests: bool = True,
) -> AsyncIterator[EmulatedCluster]:
    """`service_monitors` / `cert_manager` / `keda`: whether prometheus-operator's
    ServiceMonitor, cert-manager's Certificate and KEDA's ScaledObject APIs are served
    (installed in the cluster). Without KEDA the operator's default driver is the HPA."""
    emulator = ApiServerStandIn()
    emulator.record_requests = record_requests
    emulator.namespace_calls = []
    resources = dict(_KINDS)
    if not service_monitors:
        resources.pop(SERVICE_MONITORS)
    if not cert_manager:
        resources.pop(CERTIFICATES)
    if not keda:
        resources.pop(SCALED_OBJECTS)
    for resource, kind in resources.items():
        key = (
            f"{resource.group}/{resource.version}/{resource.plural}"
            if resource.group
            else f"v1/{resource.plural}"
        )
        emulator.resources[key] = kmock.ResourceInfo(
            kind=kind,
            namespaced=True,
            verbs=ALL_VERBS,
            subresources={"status"}
            if resource in (RERANKERS, DEPLOYMENTS, AUTOSCALERS, PODS)
            else set(),
            shortnames={"rrs"} if resource == RERANKERS else set(),
        )
    emulator.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs=ALL_VERBS
    )
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=ALL_VERBS
    )
    async with emulator, kmock.Server(emulator) as server:
        cluster = EmulatedCluster(emulator, str(server.url).rstrip("/"), workdir)
        crd = yaml.safe_load(CRD_PATH.read_text())
        await cluster._call(
            "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
        )
        try:
            yield cluster
        finally:
            await cluster.stop_operator()
            await cluster.api.aclose()


async def exercise_every_code_path(cluster: EmulatedCluster, namespace: str = "rbac-check") -> None:
    """Drive the running operator through every kind of API call it makes.

    For the chart's RBAC test: afterwards `set(cluster.calls())` is what the operator needs.
    Creates (with a cache PVC, a ServiceMonitor, a cert-manager Certificate and a
    NetworkPolicy), updates (the cache grows, another issuer, other peers), turns
    autoscaling, the cache, monitoring, TLS and the network policy off (deletes),
    puts back a deleted child, follows a Deployment's status and a pod's, reports an invalid
    spec and a missing Secret (Events, status), and deletes a RerankerService. Where the
    cluster serves KEDA, it also switches from the HPA to a ScaledObject (KEDA's takeover of the
    HPA played here), puts back an edited ScaledObject, switches back (the ScaledObject deleted,
    the HPA adopted) and deletes the HPA with autoscaling.
    """
    # Its own Secret name, so it can run where a test already made the default one.
    await cluster.create(SECRETS, namespace, jwt_secret("jwt"))

    def rrs(name: str, **spec: Any) -> dict[str, Any]:
        return reranker(name, secret_name="jwt", **({"model": {"name": "m", "cache": {}}} | spec))

    tls_and_network = {"tls": {"issuerRef": {"name": "ca"}}, "network": {}}
    driver_keda = {"driver": "keda"}

    def reason(name: str) -> str | None:
        obj = cluster.objects(RERANKERS, namespace).get(name, {})
        conditions = (obj.get("status") or {}).get("conditions", [])
        return next((c["reason"] for c in conditions if c["type"] == "Degraded"), None)

    def live(resource: Resource) -> dict[str, Any]:
        return cluster.objects(resource, namespace).get("full", {})

    # With KEDA served, the HPA first (explicitly), KEDA's ScaledObject later.
    driver = {"autoscaling": {"driver": "hpa"}} if cluster.serves_keda else {}
    await cluster.create(RERANKERS, namespace, rrs("full", **tls_and_network, **driver))
    for resource in (
        CLAIMS,
        DEPLOYMENTS,
        SERVICES,
        AUTOSCALERS,
        DISRUPTION_BUDGETS,
        SERVICE_MONITORS,
        CERTIFICATES,
        NETWORK_POLICIES,
    ):
        await cluster.wait_for_object(resource, namespace, "full")
    await cluster.patch(
        DEPLOYMENTS, namespace, "full", {"status": {"replicas": 1, "readyReplicas": 1}}, "status"
    )
    # A surge pod that finds no node: the pod watch puts it in the status.
    pod = server_pod(live(DEPLOYMENTS), "full-5d8f7c9b4-x2x7q")
    await cluster.create(
        PODS, namespace, pod | {"status": unschedulable("0/1 nodes are available")}
    )
    await cluster.wait_until(lambda: reason("full") == "Unschedulable", "Unschedulable")
    await cluster.delete(SERVICES, namespace, "full")
    await cluster.wait_for_object(SERVICES, namespace, "full")
    await cluster.patch(SERVICES, namespace, "full", {"spec": {"type": "NodePort"}})
    await cluster.wait_until(
        lambda: live(SERVICES)["spec"]["type"] == "ClusterIP", "Service put back"
    )
    await cluster.patch(
        RERANKERS,
        namespace,
        "full",
        {
            "spec": {
                "model": {"name": "m2", "cache": {"size": "40Gi"}},
                "autoscaling": {"maxReplicas": 6},
                "disruption": {"minAvailable": 0},
                "monitoring": {"interval": "30s"},
                "tls": {"issuerRef": {"name": "other-ca"}},
                "network": {"metricsFrom": []},
            }
        },
    )
    await cluster.wait_until(
        lambda: live(SERVICE_MONITORS)["spec"]["endpoints"][0]["interval"] == "30s", "patched"
    )
    await cluster.wait_until(
        lambda: live(CERTIFICATES)["spec"]["issuerRef"]["name"] == "other-ca", "patched"
    )
    await cluster.wait_until(lambda: len(live(NETWORK_POLICIES)["spec"]["ingress"]) == 1, "patched")
    autoscaler = AUTOSCALERS
    if cluster.serves_keda:
        await cluster.patch(RERANKERS, namespace, "full", {"spec": {"autoscaling": driver_keda}})
        scaled = await cluster.wait_for_object(SCALED_OBJECTS, namespace, "full")
        # Playing KEDA: it takes over the HPA the ScaledObject names (ours, left in place).
        keda_owner = {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "name": "full",
            "uid": scaled["metadata"]["uid"],
            "controller": True,
        }
        await cluster.patch(
            AUTOSCALERS,
            namespace,
            "full",
            {
                "metadata": {
                    "ownerReferences": [keda_owner],
                    "labels": {"app.kubernetes.io/managed-by": "keda-operator"},
                }
            },
        )
        await cluster.patch(SCALED_OBJECTS, namespace, "full", {"spec": {"maxReplicaCount": 9}})
        await cluster.wait_until(
            lambda: live(SCALED_OBJECTS)["spec"]["maxReplicaCount"] == 6, "ScaledObject put back"
        )
        # Back to the hpa driver: the ScaledObject deleted (Orphan), the HPA taken back.
        await cluster.patch(
            RERANKERS, namespace, "full", {"spec": {"autoscaling": {"driver": "hpa"}}}
        )
        await cluster.wait_until(lambda: not live(SCALED_OBJECTS), "the ScaledObject deleted")
        # Playing the garbage collector: it orphans the HPA of the deleted ScaledObject.
        await cluster.patch(AUTOSCALERS, namespace, "full", {"metadata": {"ownerReferences": []}})
        await cluster.wait_until(
            lambda: (
                [r["kind"] for r in live(AUTOSCALERS)["metadata"].get("ownerReferences") or []]
                == ["RerankerService"]
            ),
            "the HPA taken back",
            within=30,
        )
    await cluster.patch(
        RERANKERS,
        namespace,
        "full",
        {
            "spec": {
                "model": {"cache": None},
                "autoscaling": {"enabled": False},
                "monitoring": {"serviceMonitor": False},
                "tls": None,
                "network": None,
            }
        },
    )
    for resource in (CLAIMS, autoscaler, SERVICE_MONITORS, CERTIFICATES, NETWORK_POLICIES):
        await cluster.wait_until(lambda r=resource: not live(r), f"{resource.plural} deleted")
    await cluster.create(RERANKERS, namespace, rrs("invalid", replicas=-1))
    await cluster.create(
        RERANKERS, namespace, rrs("no-secret", auth={"secretRef": {"name": "absent"}})
    )
    await cluster.wait_until(lambda: reason("invalid") == "InvalidSpec", "InvalidSpec")
    await cluster.wait_until(lambda: reason("no-secret") == "MissingSecret", "MissingSecret")
    await cluster.wait_until(lambda: len(cluster.objects(EVENTS, namespace)) >= 8, "events posted")
    await cluster.delete(RERANKERS, namespace, "full")
