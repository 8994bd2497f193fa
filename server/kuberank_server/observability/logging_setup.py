"""Log format for `kuberank-server serve`: plain lines, one JSON document per request, and one
JSON audit record per API request (its own logger, written whatever the log level)."""

from __future__ import annotations

import logging
import sys

from kuberank_server.observability.audit import AUDIT_LOGGER


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The per-request lines and the audit records are JSON documents by themselves, one per line.
    for name in ("kuberank_server.requests", AUDIT_LOGGER):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        json_logger = logging.getLogger(name)
        json_logger.addHandler(handler)
        json_logger.propagate = False
    logging.getLogger(AUDIT_LOGGER).setLevel(logging.INFO)
