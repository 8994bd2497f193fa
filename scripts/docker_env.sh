# Sourced by scripts/images.sh and scripts/e2e.sh (from the repository root): the image
# names every part uses, and the one Docker check both scripts make before doing anything.

KUBERANK_VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
# shellcheck disable=SC2034 # used by the scripts that source this file
declare -A IMAGE_TAGS=(
  [server]="ghcr.io/kuberank/kuberank-server:$KUBERANK_VERSION"
  [server-cpu]="ghcr.io/kuberank/kuberank-server:$KUBERANK_VERSION-cpu"
  [operator]="ghcr.io/kuberank/kuberank-operator:$KUBERANK_VERSION"
)
# The docker client to use; a test points it somewhere else to see the refusal below.
DOCKER=${DOCKER:-docker}

# Never silently green: without a Docker engine these jobs cannot run, so they say why and fail.
require_docker() { # $1: the job that needs it, for the message
  if ! command -v "$DOCKER" >/dev/null 2>&1; then
    echo "$1: needs a Docker engine, but the Docker client '$DOCKER' is not installed." \
      "Install Docker (or set DOCKER=/path/to/docker) and run it again." >&2
    exit 2
  fi
  local answer
  if ! answer=$("$DOCKER" info 2>&1); then
    echo "$1: needs a Docker engine, but '$DOCKER info' got no answer from one:" >&2
    echo "$answer" | grep -v '^[[:space:]]*$' | tail -n 2 | sed 's/^/    /' >&2
    echo "Start the Docker engine (or point DOCKER_HOST at one) and run it again." >&2
    exit 2
  fi
}
