"""`kuberank-operator` itself: its settings, and the console script watching one namespace."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from tests.operator.harness import (
    DEPLOYMENTS,
    RERANKERS,
    SECRETS,
    emulated_cluster,
    reranker,
    write_kubeconfig,
)
from tests.support import free_port

from kuberank_operator.settings import OperatorSettings


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERANK_OPERATOR_NAMESPACES", "search, ads")
    monkeypatch.setenv("KUBERANK_OPERATOR_CPU_IMAGE", "registry.local/kuberank-server:dev-cpu")
    settings = OperatorSettings()
    assert settings.namespaces == ["search", "ads"]
    assert settings.cpu_image == "registry.local/kuberank-server:dev-cpu"
    assert settings.gpu_image == "ghcr.io/kuberank/kuberank-server:0.1.0"
    assert settings.json_logs is True and settings.liveness_port == 8080


async def test_console_script_watches_only_its_namespace(tmp_path: Path) -> None:
    script = shutil.which("kuberank-operator", path=str(Path(sys.executable).parent))
    assert script, "the kuberank-operator console script is not installed"
    liveness_port = free_port()
    async with emulated_cluster(tmp_path) as cluster:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "rerank-jwt"},
            "data": {"secret": "eA=="},
        }
        for namespace in ("watched", "elsewhere"):
            await cluster.create(SECRETS, namespace, secret)
            await cluster.create(RERANKERS, namespace, reranker())
        env = os.environ | {
            "KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", cluster.url))
        }
        log_path = tmp_path / "operator.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                script,
                "--namespace",
                "watched",
                "--liveness-port",
                str(liveness_port),
                env=env,
                stdout=log,
                stderr=log,
            )
        try:
            await cluster.wait_for_object(DEPLOYMENTS, "watched", "ranker", within=60)
            async with httpx.AsyncClient() as client:
                health = await client.get(f"http://127.0.0.1:{liveness_port}/healthz")
            assert health.status_code == 200
            await asyncio.sleep(1)
            assert cluster.objects(DEPLOYMENTS, "elsewhere") == {}
            assert {
                call.namespace
                for call in cluster.calls()
                if call.verb == "watch" and call.api_group == "kuberank.io"
            } == {"watched"}
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)  # JSON logs
