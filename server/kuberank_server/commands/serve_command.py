"""`kuberank-server serve`: the rerank API on uvicorn, metrics on their own port.

Every `ServerSettings` field is a flag (`max_documents` -> `--max-documents`) that overrides
its `KUBERANK_*` environment variable; the settings stay the one source of truth.
SIGTERM drains: `/ready` and new requests get 503 at once, accepted requests finish (up to
`--drain-timeout-seconds`), then the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Any

from pydantic import ValidationError

from kuberank_server.commands.dev_mode import (
    dev_settings,
    print_dev_curl_when_ready,
    quiet_engine_logs,
)
from kuberank_server.http.http_limits import api_server_config, start_metrics_server
from kuberank_server.http.tls import TLSConfigurationError, uvicorn_tls_options
from kuberank_server.observability.logging_setup import configure_logging
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.lifecycle import DrainingServer, write_termination_message
from kuberank_server.runtime.settings import ServerSettings
from kuberank_server.runtime.settings_flags import add_settings_flags, settings_from_args

log = logging.getLogger("kuberank_server.serve")

EXIT_USAGE = 2
EXIT_ENGINE_FAILED = 1


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    parser = subcommands.add_parser(
        "serve",
        help="serve the rerank API (vLLM in-process)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    add_settings_flags(parser)
    parser.add_argument(
        "--dev",
        action="store_true",
        default=False,
        help="local development: bind 127.0.0.1, a random JWT secret unless one is configured, "
        "and print a curl command with a fresh token once ready",
    )
    parser.set_defaults(run=run)


def serve_settings(args: argparse.Namespace) -> ServerSettings:
    settings = settings_from_args(args)
    return dev_settings(settings) if args.dev else settings


def run(args: argparse.Namespace) -> int:
    try:
        settings = serve_settings(args)
    except ValidationError as error:
        print(f"kuberank-server serve: invalid settings:\n{error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level)
    if args.dev:
        quiet_engine_logs()

    from kuberank_server.auth import AuthConfigurationError
    from kuberank_server.http.app import create_app

    metrics = ServerMetrics()
    engine_failed = threading.Event()
    server: DrainingServer | None = None

    def stop_on_engine_failure() -> None:
        engine_failed.set()
        if server is not None:
            server.should_exit = True

    try:
        tls_options = uvicorn_tls_options(settings)
        app = create_app(settings, metrics=metrics, on_engine_failure=stop_on_engine_failure)
    except (AuthConfigurationError, TLSConfigurationError) as error:
        print(f"kuberank-server serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    if settings.metrics_port:
        start_metrics_server(metrics, settings)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    config = api_server_config(
        app, settings, protocol=app.state.connection_recycler.protocol, **tls_options
    )
    server = DrainingServer(config, app.state.lifecycle, settings.drain_timeout_seconds)
    if args.dev:
        print_dev_curl_when_ready(settings)
    server.run()
    if engine_failed.is_set():
        write_termination_message(settings.termination_message_file, app.state.lifecycle.reason)
        return EXIT_ENGINE_FAILED
    return 0
