"""`ServerSettings` as command-line flags: `max_documents` -> `--max-documents`.

A flag overrides its `KUBERANK_*` environment variable; the settings stay the one source of
truth, so any subcommand that reads them can offer the same flags.
"""

from __future__ import annotations

import argparse
import json
from typing import get_origin

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
        help_text = f"{field.description or name} (env {env_var(name)})"
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                help=help_text)  # fmt: skip
        elif get_origin(field.annotation) is list:
            parser.add_argument(flag, dest=name, metavar="JSON_LIST", type=json_list,
                                help=help_text)  # fmt: skip
        else:
            parser.add_argument(flag, dest=name, metavar=name.upper(), help=help_text)


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
