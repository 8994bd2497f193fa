#!/usr/bin/env bash
# End-to-end on a throwaway kind cluster (`make e2e`; needs a Docker engine):
#   1. create a kind cluster            5. call it with a minted token: the seed example's
#   2. build + `kind load` the images      third document must rank last (and no token: 401)
#   3. `helm install` charts/kuberank   6. change the spec and watch the Deployment roll out
#   4. apply the CPU sample              7. delete it and watch every child go
#      RerankerService, wait for Ready  8. delete the cluster (E2E_KEEP_CLUSTER=1 keeps it)
# Where Docker is missing it says so and exits non-zero: it is never silently green.
# On failure, cluster state and logs are left in artifacts/e2e/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/docker_env.sh

KIND_VERSION=v0.30.0
CLUSTER=${E2E_CLUSTER:-kuberank-e2e}
RELEASE=kuberank
OPERATOR_NAMESPACE=kuberank
NAMESPACE=rerank-e2e
SAMPLE=manifests/samples/rerankerservice-cpu.yaml
ARTIFACTS=artifacts/e2e
READY_TIMEOUT=${E2E_READY_TIMEOUT:-900s}

step() { printf '\n==> %s\n' "$*"; }
fail() {
  echo "e2e: FAILED: $*" >&2
  exit 1
}

require_docker "make e2e"
for tool in kubectl helm curl; do
  command -v "$tool" >/dev/null || fail "needs $tool on PATH (make e2e provides kubectl and helm)"
done

ensure_kind() {
  command -v kind >/dev/null && return
  local arch
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) fail "no kind release for $(uname -m); install kind $KIND_VERSION yourself" ;;
  esac
  step "downloading kind $KIND_VERSION to .tools/bin/kind"
  local url="https://kind.sigs.k8s.io/dl/$KIND_VERSION/kind-linux-$arch"
  mkdir -p .tools/bin
  curl -fsSL --retry 3 -o .tools/bin/kind.download "$url"
  # The release publishes a checksum beside each binary: a truncated download fails here.
  local expected actual
  expected=$(curl -fsSL --retry 3 "$url.sha256sum" | cut -d' ' -f1)
  actual=$(sha256sum .tools/bin/kind.download | cut -d' ' -f1)
  [[ "$expected" == "$actual" ]] || fail "kind download checksum $actual, expected $expected"
  chmod 0755 .tools/bin/kind.download
  mv .tools/bin/kind.download .tools/bin/kind
  export PATH="$PWD/.tools/bin:$PATH"
}
ensure_kind

KUBECONFIG=$(mktemp -t kuberank-e2e-kubeconfig.XXXXXX) # the user's own kubeconfig is untouched
export KUBECONFIG
port_forward_pid=
cleanup() {
  local status=$?
  [[ -z "$port_forward_pid" ]] || kill "$port_forward_pid" 2>/dev/null || true
  if ((status != 0)) && kubectl version >/dev/null 2>&1; then
    echo "e2e: collecting cluster state in $ARTIFACTS/" >&2
    mkdir -p "$ARTIFACTS"
    kubectl get all,rerankerservices,events -A -o wide >"$ARTIFACTS/state.txt" 2>&1 || true
    kubectl -n "$NAMESPACE" describe rerankerservices,deployments,pods >"$ARTIFACTS/describe.txt" 2>&1 || true
    kubectl -n "$OPERATOR_NAMESPACE" logs -l app.kubernetes.io/name=kuberank-operator --tail=-1 \
      >"$ARTIFACTS/operator.log" 2>&1 || true
    kubectl -n "$NAMESPACE" logs -l app.kubernetes.io/name=kuberank-server --tail=-1 \
      >"$ARTIFACTS/server.log" 2>&1 || true
  fi
  if [[ "${E2E_KEEP_CLUSTER:-0}" == 1 ]]; then
    echo "e2e: keeping kind cluster '$CLUSTER' (KUBECONFIG=$KUBECONFIG)" >&2
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -f "$KUBECONFIG"
  fi
  exit "$status"
}
trap cleanup EXIT

step "1. kind cluster '$CLUSTER'"
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s

step "2. images"
scripts/images.sh server-cpu operator
kind load docker-image --name "$CLUSTER" "${IMAGE_TAGS[server-cpu]}" "${IMAGE_TAGS[operator]}"

step "3. helm install charts/kuberank"
helm install "$RELEASE" charts/kuberank --namespace "$OPERATOR_NAMESPACE" --create-namespace \
  --wait --timeout 5m
kubectl get crd rerankerservices.kuberank.io >/dev/null

step "4. the CPU sample RerankerService"
kubectl create namespace "$NAMESPACE"
jwt_secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
kubectl -n "$NAMESPACE" create secret generic rerank-jwt --from-literal=secret="$jwt_secret"
kubectl -n "$NAMESPACE" apply -f "$SAMPLE"
name=$(kubectl -n "$NAMESPACE" get -f "$SAMPLE" -o jsonpath='{.metadata.name}')
kubectl -n "$NAMESPACE" wait "rerankerservice/$name" --for=condition=Ready --timeout="$READY_TIMEOUT"
kubectl -n "$NAMESPACE" get "rerankerservice/$name"

step "5. call it with a token"
token=$(KUBERANK_JWT_SECRET="$jwt_secret" .venv/bin/kuberank-server token --subject e2e)
port=18000
kubectl -n "$NAMESPACE" port-forward "service/$name" "$port:8000" >/dev/null &
port_forward_pid=$!
for _ in $(seq 30); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 1
done
# The seed example (the third document is the odd one out), from its one definition.
seed_request=$(.venv/bin/python -c '
import json
from kuberank_server.ui.examples import EXAMPLE_DOCUMENTS, EXAMPLE_QUERY
print(json.dumps({"query": EXAMPLE_QUERY, "documents": list(EXAMPLE_DOCUMENTS)}))')
unauthenticated=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "$seed_request" "http://127.0.0.1:$port/v1/rerank")
[[ "$unauthenticated" == 401 ]] || fail "a request without a token got $unauthenticated, not 401"
curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d "$seed_request" "http://127.0.0.1:$port/v1/rerank" | .venv/bin/python -c '
import json, sys
ranking = [result["index"] for result in json.load(sys.stdin)["results"]]
print("ranking (document indexes, best first):", ranking)
sys.exit(0 if len(ranking) == 4 and ranking[-1] == 2 else "the third document must rank last")'
kill "$port_forward_pid" 2>/dev/null || true
port_forward_pid=

step "6. a spec change rolls out"
old_generation=$(kubectl -n "$NAMESPACE" get "deployment/$name" -o jsonpath='{.metadata.generation}')
kubectl -n "$NAMESPACE" patch "rerankerservice/$name" --type merge \
  -p '{"spec": {"limits": {"maxDocuments": 500}}}'
for _ in $(seq 60); do
  env_value=$(kubectl -n "$NAMESPACE" get "deployment/$name" -o \
    jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="KUBERANK_MAX_DOCUMENTS")].value}')
  [[ "$env_value" == 500 ]] && break
  sleep 2
done
[[ "$env_value" == 500 ]] || fail "the Deployment never got KUBERANK_MAX_DOCUMENTS=500"
new_generation=$(kubectl -n "$NAMESPACE" get "deployment/$name" -o jsonpath='{.metadata.generation}')
((new_generation > old_generation)) || fail "the Deployment's generation did not move"
kubectl -n "$NAMESPACE" rollout status "deployment/$name" --timeout="$READY_TIMEOUT"
kubectl -n "$NAMESPACE" wait "rerankerservice/$name" --for=condition=Ready --timeout="$READY_TIMEOUT"

step "7. deleting it removes its children"
children="deployments,services,poddisruptionbudgets,horizontalpodautoscalers"
selector="app.kubernetes.io/instance=$name"
[[ -n "$(kubectl -n "$NAMESPACE" get "$children" -l "$selector" -o name)" ]] \
  || fail "no children labelled $selector before the delete"
kubectl -n "$NAMESPACE" delete "rerankerservice/$name" --wait --timeout=120s
for _ in $(seq 60); do
  left=$(kubectl -n "$NAMESPACE" get "$children" -l "$selector" -o name)
  [[ -z "$left" ]] && break
  sleep 2
done
[[ -z "$left" ]] || fail "children left after deleting the RerankerService: $left"

step "e2e: PASSED"
