"""Print constraints.txt for what .venv holds now (`make constraints`).

Left out: our own package, and the packages that belong to one build of PyTorch only (the
CUDA-enabled build from PyPI brings `nvidia-*`, `cuda-*` and its own `triton`; the CPU build
none). torch itself is pinned by release, without its local label, so that the one file admits
both builds (docker/torch_source.py picks) and still stops pip from moving torch.
"""

from __future__ import annotations

import re
import subprocess
import sys

HEADER = (
    "# Exact versions the test suite last passed with (pip freeze). "
    "Regenerate with: make constraints"
)
OWN_PACKAGE = re.compile(r"^kuberank==", re.IGNORECASE)
TORCH_BUILD_PACKAGES = re.compile(r"^(nvidia-[\w.-]+|cuda-[\w.-]+|triton)==", re.IGNORECASE)


def constraints(frozen: list[str]) -> list[str]:
    lines = [HEADER]
    for line in frozen:
        if OWN_PACKAGE.match(line) or TORCH_BUILD_PACKAGES.match(line):
            continue
        lines.append(re.sub(r"^(torch==[^+\s]+)\+\S+$", r"\1", line, flags=re.IGNORECASE))
    return lines


def main() -> int:
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    print("\n".join(constraints(frozen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
