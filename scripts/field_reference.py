"""README.md's RerankerService field reference, generated from the CRD (itself generated from
the operator's typed models by scripts.generate).

    python -m scripts.field_reference          rewrite the reference between the README markers
    python -m scripts.field_reference --check  exit 1 if the README's reference has drifted

The tables list every field of `spec` and `status` with its type, default, allowed values,
bounds and the CRD's own description (what `kubectl explain` shows), so the README cannot
promise a field, a default or a value the API server does not know.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = REPO_ROOT / "operator" / "kuberank_operator" / "crd" / "rerankerservices.yaml"
README_PATH = REPO_ROOT / "README.md"
BEGIN_MARKER = (
    "<!-- field-reference:begin (generated from the CRD by `python -m scripts.field_reference`;"
    " edit the models in operator/kuberank_operator/spec.py, not this table) -->"
)
END_MARKER = "<!-- field-reference:end -->"

Schema = dict[str, Any]


def load_schema(crd_path: Path = CRD_PATH) -> Schema:
    """The openAPIV3Schema of the CRD's storage version."""
    crd = yaml.safe_load(crd_path.read_text())
    version = next(version for version in crd["spec"]["versions"] if version["storage"])
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def _type(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"[]{_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map[string]{_type(schema['additionalProperties'])}"
    return str(kind)


def _value(value: object) -> str:
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _notes(schema: Schema, required: bool) -> list[str]:
    notes = []
    if required:
        notes.append("**Required.**")
    if "enum" in schema:
        notes.append("One of " + ", ".join(_value(choice) for choice in schema["enum"]) + ".")
    items = schema.get("items", {})
    if "enum" in items:
        notes.append("Items: " + ", ".join(_value(choice) for choice in items["enum"]) + ".")
    bounds = [
        f"{'>' if schema.get('exclusiveMinimum') else '≥'} {schema['minimum']}"
        if "minimum" in schema
        else "",
        f"≤ {schema['maximum']}" if "maximum" in schema else "",
    ]
    if any(bounds):
        notes.append("Range: " + ", ".join(bound for bound in bounds if bound) + ".")
    if "pattern" in schema:
        notes.append(f"Pattern: `{schema['pattern']}`.")
    return notes


def _rows(schema: Schema, path: str, required: bool = False) -> Iterator[tuple[str, ...]]:
    is_object = schema.get("type") == "object"
    # Objects' defaults are `{}` (filled in by their fields' own defaults): not worth a cell.
    default = _value(schema["default"]) if "default" in schema and not is_object else ""
    description = " ".join([schema.get("description", "").strip(), *_notes(schema, required)])
    yield path, _type(schema), default, description.strip()
    children_required = set(schema.get("required", []))
    for name, child in schema.get("properties", {}).items():
        yield from _rows(child, f"{path}.{name}", name in children_required)
    items = schema.get("items", {})
    for name, child in items.get("properties", {}).items():
        yield from _rows(child, f"{path}[].{name}", name in set(items.get("required", [])))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(schema: Schema) -> str:
    """The Markdown between the markers: one table for spec, one for status."""
    sections = []
    for top in ("spec", "status"):
        lines = [
            f"#### `{top}`",
            "",
            "| Field | Type | Default | Description |",
            "|---|---|---|---|",
        ]
        for path, kind, default, description in _rows(schema["properties"][top], top):
            lines.append(f"| `{path}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def with_reference(readme: str, reference: str) -> str:
    """`readme` with the text between the markers replaced by `reference`."""
    begin, end = readme.find(BEGIN_MARKER), readme.find(END_MARKER)
    if begin < 0 or end < begin:
        raise ValueError(f"README.md lacks the markers {BEGIN_MARKER!r} ... {END_MARKER!r}")
    return f"{readme[: begin + len(BEGIN_MARKER)]}\n{reference}\n{readme[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md has drifted")
    args = parser.parse_args(argv)

    readme = README_PATH.read_text()
    updated = with_reference(readme, render(load_schema()))
    if updated == readme:
        return 0
    if args.check:
        print(
            "README.md's field reference differs from the CRD; "
            "run `python -m scripts.field_reference`.",
            file=sys.stderr,
        )
        return 1
    README_PATH.write_text(updated)
    print(f"updated the field reference in {README_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
