"""Helpers for the API-key and audit tests: key files as the key Secret holds them, keys made
by the real `apikey create` command, a real server app on loopback, and captured logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from tests.support import free_port

from kuberank_server.observability.audit import AUDIT_LOGGER


def create_key(*args: str) -> tuple[str, dict[str, Any]]:
    """(key, {name: entry}) from `kuberank-server apikey create ARGS`, run as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "kuberank_server.commands.cli", "apikey", "create", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    key, entry = result.stdout.splitlines()
    return key, json.loads(entry)


def write_key_file(path: Path, entries: Mapping[str, Any]) -> None:
    """Replace the file as kubelet updates a mounted Secret: a new file swapped in at once."""
    staging = path.with_name(f".{path.name}.new")
    staging.write_text(json.dumps(dict(entries), indent=2))
    os.replace(staging, path)


class RecordingHandler(logging.Handler):
    """Every record any logger emits, formatted, for checks that nothing secret was logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(
            f"{record.name} {record.getMessage()} {record.exc_text or ''}"
            for record in self.records
        )

    def audit_records(self) -> list[dict[str, Any]]:
        return [json.loads(r.getMessage()) for r in self.records if r.name == AUDIT_LOGGER]


@contextmanager
def recording_logs() -> Iterator[RecordingHandler]:
    """Records of every logger: the root's, and those of loggers that `serve` stopped from
    propagating (the request log, the audit log), if a test in this process ran it."""
    root = logging.getLogger()
    handler, level = RecordingHandler(), root.level
    loggers = [root] + [
        logging.getLogger(name)
        for name in ("kuberank_server.requests", AUDIT_LOGGER)
        if not logging.getLogger(name).propagate
    ]
    for logger in loggers:
        logger.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        root.setLevel(level)


@asynccontextmanager
async def serving_over_http(app: FastAPI, ready_within: float = 120) -> AsyncIterator[str]:
    """uvicorn serving `app` on 127.0.0.1 in this event loop (the one the engine runs in),
    until its `/ready` says 200; yields the base URL. Synchronous clients (the SDKs) must be
    called through `asyncio.to_thread`, or they would block the loop serving them."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(ready_within), httpx.AsyncClient(base_url=url) as client:
            # Polling: neither uvicorn's start nor the app's readiness is an event to await.
            while not server.started:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            while (await client.get("/ready")).status_code != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        yield url
    finally:
        server.should_exit = True
        await task
