"""`kuberank-server ui`: the playground web UI, an HTTP client of a kuberank endpoint.

Gradio is imported only when this subcommand runs, so `serve` and `token` never pay for it.
"""

from __future__ import annotations

import argparse
import os
import sys

TOKEN_ENV = "KUBERANK_UI_TOKEN"  # noqa: S105 - a variable name, not a secret


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "ui",
        help="serve the playground web UI against a kuberank endpoint",
        description=(
            "Serve a playground to paste a query and documents and see the ranking. "
            f"The bearer token comes from the page or from ${TOKEN_ENV}; the latter stays "
            "on this process and is never sent to the browser."
        ),
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("KUBERANK_URL", "http://127.0.0.1:8000"),
        help="the kuberank endpoint to call (default: $KUBERANK_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from kuberank_server.ui.app import serve_playground
    except ModuleNotFoundError as missing:
        if missing.name != "gradio":
            raise
        print(
            "kuberank-server ui needs Gradio: pip install 'kuberank[ui]'",
            file=sys.stderr,
        )
        return 2

    try:
        serve_playground(
            endpoint_url=args.url,
            server_token=os.environ.get(TOKEN_ENV) or None,
            host=args.host,
            port=args.port,
        )
    except OSError:
        # Gradio's own message speaks of launch() parameters, not of this command's flags.
        print(
            f"kuberank-server ui: cannot listen on {args.host}:{args.port}; "
            "is it taken? Choose another --port or --host.",
            file=sys.stderr,
        )
        return 1
    return 0
