"""`kuberank-operator [--namespace NS ...]`: run the Kopf operator with OperatorSettings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from collections.abc import Sequence

import kopf

from kuberank_operator.runtime import Runtime
from kuberank_operator.settings import OperatorSettings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kuberank-operator", description="Run the RerankerService operator (Kopf)."
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; default: KUBERANK_OPERATOR_NAMESPACES, else all)",
    )
    parser.add_argument("--liveness-port", type=int, help="port of /healthz (0: none)")
    parser.add_argument("--verbose", action="store_true", help="debug logs")
    return parser.parse_args(argv)


async def run_operator(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run until `stop_flag` is set (or a signal arrives); used by the CLI and the tests."""
    import kuberank_operator.main  # noqa: F401 - registers the handlers

    liveness = (
        f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    )
    await kopf.operator(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=True,  # one replica (Recreate): no peering objects to coordinate
        liveness_endpoint=liveness,
        memo=kopf.Memo(runtime=Runtime(settings)),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict[str, object] = {}
    if args.namespace:
        overrides["namespaces"] = args.namespace
    if args.liveness_port is not None:
        overrides["liveness_port"] = args.liveness_port
    settings = OperatorSettings(**overrides)  # type: ignore[arg-type]
    kopf.configure(
        debug=args.verbose,
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if settings.json_logs else kopf.LogFormat.PLAIN,
        log_refkey="object",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call is noise
    logging.getLogger(__name__).info("watching %s", settings.namespaces or "all namespaces")
    asyncio.run(run_operator(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
