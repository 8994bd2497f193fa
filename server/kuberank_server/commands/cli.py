"""`kuberank-server`: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    # Each subcommand module registers its own parser; imported here, lazily enough that
    # `token`, `apikey` and `ui` never import vLLM.
    from kuberank_server.commands import apikey_command, serve_command, token_command, ui_command

    parser = argparse.ArgumentParser(prog="kuberank-server", description=__doc__)
    subcommands = parser.add_subparsers(dest="command", required=True)
    serve_command.register(subcommands)
    token_command.register(subcommands)
    apikey_command.register(subcommands)
    ui_command.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
