"""Helpers shared by the test parts (import as `tests.support`)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def engine_test_env() -> dict[str, str]:
    """Environment for a vLLM engine on this 2-core CPU machine: offline, small KV cache."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_CPU_KVCACHE_SPACE="1",
        KUBERANK_GPU_MEMORY_UTILIZATION="0.2",
    )
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
