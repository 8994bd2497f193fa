#!/usr/bin/env bash
# Build the container images from Dockerfile (`make images`; needs a Docker engine).
#
#   usage: scripts/images.sh [TARGET...]    TARGET: server-cpu, operator, server (default: all)
#
# The GPU target (`server`) starts from the multi-GiB official vLLM image; `make e2e` builds
# only server-cpu and operator.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/docker_env.sh

targets=("$@")
((${#targets[@]})) || targets=(server-cpu operator server)
for target in "${targets[@]}"; do
  if [[ ! -v IMAGE_TAGS[$target] ]]; then
    echo "images.sh: unknown target '$target' (expected: ${!IMAGE_TAGS[*]})" >&2
    exit 2
  fi
done
require_docker "make images"

for target in "${targets[@]}"; do
  echo "==> building ${IMAGE_TAGS[$target]} (Dockerfile target $target)"
  DOCKER_BUILDKIT=1 "$DOCKER" build --target "$target" --tag "${IMAGE_TAGS[$target]}" .
done
