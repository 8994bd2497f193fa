"""Print, one per line, the requirements of an installed distribution this environment lacks.

usage: python missing_requirements.py DISTRIBUTION CONSTRAINTS_FILE

Each missing requirement is printed pinned to its version in CONSTRAINTS_FILE (extras kept),
so `pip install` adds exactly those, at tested versions, and leaves every installed
distribution as it is. The GPU image needs this: the official vLLM image already holds
fastapi, pydantic, torch... at the versions vLLM was built with, and re-pinning them to ours
could break vLLM. A requirement with extras counts as missing when one of its extra's own
requirements is missing (`pyjwt[crypto]` without `cryptography`).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _requirements(distribution: str, extra: str = "") -> list[Requirement]:
    """The distribution's requirements that apply here when installed with `extra` ("": none)."""
    applicable: list[Requirement] = []
    for line in requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
            applicable.append(requirement)
    return applicable


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


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    for requirement in missing_requirements(argv[0], Path(argv[1])):
        print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
