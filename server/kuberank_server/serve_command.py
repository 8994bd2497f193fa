"""`kuberank-server serve`: the rerank API on uvicorn, metrics on their own port.

Every `ServerSettings` field is a flag (`max_documents` -> `--max-documents`) that overrides
its `KUBERANK_*` environment variable; the settings stay the one source of truth.
SIGTERM drains: `/ready` and new requests get 503 at once, accepted requests finish (up to
`--drain-timeout-seconds`), then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, get_origin

import httpx
import uvicorn
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from pydantic import SecretStr, ValidationError

from kuberank_server.lifecycle import Lifecycle
from kuberank_server.metrics import ServerMetrics
from kuberank_server.settings import ServerSettings
from kuberank_server.tls import TLSConfigurationError, uvicorn_tls_options

log = logging.getLogger("kuberank_server.serve")

EXIT_USAGE = 2
EXIT_ENGINE_FAILED = 1
# Kubernetes keeps at most this much of a container's termination message.
TERMINATION_MESSAGE_MAX_BYTES = 4096
# Secrets never go on a command line (visible in `ps`); they come from env or files.
_NOT_FLAGS = frozenset({"jwt_secret"})
DEV_TOKEN_TTL_SECONDS = 12 * 3600
_DEV_READY_TIMEOUT_SECONDS = 600


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    parser = subcommands.add_parser(
        "serve",
        help="serve the rerank API (vLLM in-process)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    for name, field in ServerSettings.model_fields.items():
        if name in _NOT_FLAGS:
            continue
        help_text = f"{field.description or name} (env KUBERANK_{name.upper()})"
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                help=help_text)  # fmt: skip
        elif get_origin(field.annotation) is list:
            parser.add_argument(flag, dest=name, metavar="JSON_LIST", type=json_list,
                                help=help_text)  # fmt: skip
        else:
            parser.add_argument(flag, dest=name, metavar=name.upper(), help=help_text)
    parser.add_argument(
        "--dev",
        action="store_true",
        default=False,
        help="local development: plain HTTP on 127.0.0.1, a random JWT secret unless one is "
        "configured, and print a curl command with a fresh token once ready",
    )
    parser.set_defaults(run=run)


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
    overrides = {name: value for name, value in vars(args).items()
                 if name in ServerSettings.model_fields}  # fmt: skip
    settings = ServerSettings(**overrides)
    if args.dev:
        # Plain HTTP on loopback, whatever the environment says: the printed curl must work.
        settings = settings.model_copy(
            update={"host": "127.0.0.1", "tls_cert_file": None, "tls_key_file": None}
        )
        if settings.auth_mode == "jwt" and not _has_key(settings):
            settings = settings.model_copy(
                update={"jwt_secret": SecretStr(secrets.token_urlsafe(32))}
            )
    return settings


def _has_key(settings: ServerSettings) -> bool:
    return any(
        (settings.jwt_secret, settings.jwt_secret_file, settings.jwt_public_key_file,
         settings.jwks_url)
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValidationError as error:
        print(f"kuberank-server serve: invalid settings:\n{error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level)

    from kuberank_server.app import create_app
    from kuberank_server.auth import AuthConfigurationError

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
        start_http_server(
            settings.metrics_port, addr=settings.host, registry=combined_registry(metrics)
        )
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # our own JSON line per request replaces it
        timeout_graceful_shutdown=1,  # the drain already waited for accepted requests
        **tls_options,
    )
    server = DrainingServer(config, app.state.lifecycle, settings.drain_timeout_seconds)
    if args.dev:
        _print_dev_curl_when_ready(settings)
    server.run()
    if engine_failed.is_set():
        write_termination_message(settings.termination_message_file, app.state.lifecycle.reason)
        return EXIT_ENGINE_FAILED
    return 0


def write_termination_message(path: Path | None, message: str) -> None:
    """Leave why the process failed where Kubernetes reads it into the pod's status
    (`lastState.terminated.message`), so the operator can show it on the RerankerService."""
    if path is None:
        return
    data = message.encode()[:TERMINATION_MESSAGE_MAX_BYTES].decode(errors="ignore")
    try:
        path.write_text(data)
    except OSError as error:  # the reason is in the log already; this is a convenience
        log.warning("could not write the termination message to %s: %s", path, error)


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM/SIGINT drains first, and the process exits 0 afterwards
    (uvicorn re-raises the caught signal on exit, which would make the exit status 143)."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_seconds: float):
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_seconds = drain_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._drain is not None:
            # Not started yet, or a second signal: stop now.
            self.should_exit = True
            self.force_exit = self._drain is not None and sig == signal.SIGINT
            return
        log.info("signal %s: draining (up to %.0f s)", signal.Signals(sig).name,
                 self.drain_seconds)  # fmt: skip
        self.lifecycle.begin_drain()
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        started = time.monotonic()
        finished = await self.lifecycle.wait_idle(self.drain_seconds)
        log.info(
            "drain %s after %.2f s; shutting down",
            "complete" if finished else "timed out", time.monotonic() - started,
        )  # fmt: skip
        self.should_exit = True


class _CombinedCollector(Collector):
    """Our registry and prometheus_client's default one (where vLLM puts `vllm:*`)."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self.registries:
            yield from registry.collect()


def combined_registry(metrics: ServerMetrics) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_CombinedCollector(metrics.registry, REGISTRY))
    return registry


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The per-request lines are JSON documents by themselves, one per line.
    request_handler = logging.StreamHandler(sys.stdout)
    request_handler.setFormatter(logging.Formatter("%(message)s"))
    request_logger = logging.getLogger("kuberank_server.requests")
    request_logger.addHandler(request_handler)
    request_logger.propagate = False


def _print_dev_curl_when_ready(settings: ServerSettings) -> None:
    def wait_then_print() -> None:
        url = f"http://{settings.host}:{settings.port}"
        deadline = time.monotonic() + _DEV_READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    print(dev_curl(settings, url), flush=True)
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)

    threading.Thread(target=wait_then_print, name="dev-curl", daemon=True).start()


def dev_curl(settings: ServerSettings, url: str) -> str:
    """A ready-to-paste curl of the seed example, with a freshly minted token."""
    from kuberank_server.ui.examples import EXAMPLE_DOCUMENTS, EXAMPLE_QUERY

    body = json.dumps({"query": EXAMPLE_QUERY, "documents": list(EXAMPLE_DOCUMENTS)})
    headers = ["-H", "Content-Type: application/json"]
    if settings.auth_mode == "jwt":
        headers += ["-H", f"Authorization: Bearer {_dev_token(settings)}"]
    command = shlex.join(["curl", "-sS", f"{url}/v1/rerank", *headers, "-d", body])
    return f"\nkuberank-server is ready. Try it:\n\n{command}\n"


def _dev_token(settings: ServerSettings) -> str:
    from kuberank_server.auth.keys import read_secret_file
    from kuberank_server.auth.tokens import mint_token

    if settings.jwt_secret is not None:
        key: str | bytes = settings.jwt_secret.get_secret_value()
    elif settings.jwt_secret_file is not None:
        key = read_secret_file(settings.jwt_secret_file)
    else:
        return "<a token from your issuer: this server verifies public keys only>"
    return mint_token(
        key=key,
        subject="dev",
        scopes=settings.jwt_required_scopes,
        ttl_seconds=DEV_TOKEN_TTL_SECONDS,
        algorithm=settings.jwt_algorithms[0],
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
