"""`ServerSettings` as command-line flags: `max_documents` -> `--max-documents`.

A flag overrides its `KUBERANK_*` environment variable; the settings stay the one source of
truth, so any subcommand that reads them can offer the same flags.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo

from kuberank_contract import env_var
from kuberank_server.runtime.settings import ServerSettings

# Secrets never go on a command line (visible in `ps`); they come from env or files.
NOT_FLAGS = frozenset({"jwt_secret"})


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, absent from the parsed namespace unless given
    (the parser needs `argument_default=argparse.SUPPRESS`)."""
    for name, field in ServerSettings.model_fields.items():
        if name in NOT_FLAGS:
            continue
        description = str(field.description).rstrip(".").replace("%", "%%")
        help_text = f"{description} (default: {_default(field)}; env {env_var(name)})"
        flag = "--" + name.replace("_", "-")
        choices = _choices(field.annotation)
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                help=help_text)  # fmt: skip
        elif get_origin(field.annotation) is list:
            parser.add_argument(flag, dest=name, metavar="JSON_LIST", type=json_list,
                                help=help_text)  # fmt: skip
        elif choices:
            parser.add_argument(flag, dest=name, choices=choices, help=help_text)
        else:
            parser.add_argument(flag, dest=name, metavar=name.upper(), help=help_text)


def _choices(annotation: Any) -> tuple[str, ...]:
    """The values of a Literal setting (`X | None` unwrapped); () for any other type."""
    options = [option for option in get_args(annotation) if option is not type(None)]
    if get_origin(annotation) is Literal:
        return tuple(map(str, get_args(annotation)))
    if len(options) == 1 and get_origin(options[0]) is Literal:
        return tuple(map(str, get_args(options[0])))
    return ()


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    shown = json.dumps(value) if isinstance(value, list) else str(value)
    return shown.replace("%", "%%")  # argparse's format character in help texts


def json_list(value: str) -> list[str]:
    """A list flag takes a JSON list, as its environment variable does."""
    try:
        items = json.loads(value)
    except json.JSONDecodeError:
        items = None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise argparse.ArgumentTypeError(
            f'expected a JSON list of strings such as \'["a", "b"]\', got {value!r}'
        )
    return items


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The environment's settings with the given flags on top (pydantic ValidationError if bad)."""
    overrides = {name: value for name, value in vars(args).items()
                 if name in ServerSettings.model_fields}  # fmt: skip
    return ServerSettings(**overrides)
