"""Helpers shared by the test parts (import as `tests.support`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def engine_test_env() -> dict[str, str]:
    """Environment for a vLLM engine here: offline. The KV cache is the server's own default
    (no variable of vLLM's), so every engine test runs what a user runs."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    return env


@dataclass
class LiveServer:
    url: str
    metrics_url: str
    secret: str
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def token(self, subject: str = "test-client", scopes: Sequence[str] = ("rerank",)) -> str:
        from kuberank_server.auth.tokens import mint_token

        return mint_token(key=self.secret, subject=subject, scopes=scopes, ttl_seconds=3600)

    def headers(self, **token_args: object) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**token_args)}"}  # type: ignore[arg-type]


def wait_ready(server: LiveServer, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"server exited early; see {server.log_path}:\n"
                + server.log_path.read_text()[-4000:]
            )
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"server not ready after {timeout_seconds} s; see {server.log_path}")


# Allocates and writes every page of N bytes (so they are really taken), then says so.
_HOLD_MEMORY = """
import sys
held = bytearray(int(sys.argv[1]))
for offset in range(0, len(held), 4096):
    held[offset] = 1
print("holding", flush=True)
sys.stdin.read()
"""


@contextmanager
def memory_held_by_another_process(size_bytes: int) -> Iterator[None]:
    """Another process holds `size_bytes` of this machine's memory for the block's duration,
    as a browser would on a laptop."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_MEMORY, str(size_bytes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        yield
    finally:
        holder.kill()
        holder.wait()
