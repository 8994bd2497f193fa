"""A stand-in kuberank endpoint for the playground tests.

`StandInServer` is a tiny real HTTP server on loopback that answers whatever the test
scripts (a status, headers, a body). It stands in for statuses the shared `live_server`
cannot be pushed into cheaply (429 over capacity, 503 draining, a broken body); everything
a real server can answer is tested against `live_server` instead.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ScriptedAnswer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


@dataclass
class StandInServer:
    url: str
    answer: ScriptedAnswer = field(default_factory=ScriptedAnswer)
    received_headers: dict[str, str] = field(default_factory=dict)
    received_body: Any = None

    def answer_json(
        self, status: int, body: Any, headers: dict[str, str] | None = None, delay: float = 0.0
    ) -> None:
        self.answer = ScriptedAnswer(status, json.dumps(body).encode(), headers or {}, delay)

    def answer_error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        envelope = {"error": {"type": "stand_in", "message": message, "param": None}}
        self.answer_json(status, envelope, headers)


@contextmanager
def serve_stand_in() -> Iterator[StandInServer]:
    stand_in = StandInServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            stand_in.received_headers = dict(self.headers.items())
            stand_in.received_body = json.loads(self.rfile.read(length) or b"null")
            answer = stand_in.answer
            time.sleep(answer.delay_seconds)
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
