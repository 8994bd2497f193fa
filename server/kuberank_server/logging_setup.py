"""Log format for `kuberank-server serve`: plain lines, and one JSON document per request."""

from __future__ import annotations

import logging
import sys


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
