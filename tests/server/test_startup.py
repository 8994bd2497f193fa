"""Start-up phases: logged as they begin, while they last and when they end, and exported as
`kuberank_startup_seconds{phase}`; the compile cache location reaches vLLM's engine process
through VLLM_CACHE_ROOT."""

from __future__ import annotations

import asyncio
import gc
import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from tests.server.harness import server_settings, serving

from kuberank_server.commands.dev_mode import quiet_engine_logs
from kuberank_server.engine.scorer import Scorer
from kuberank_server.observability import startup
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.observability.startup import StartupPhases, use_compile_cache


@pytest.mark.engine
async def test_golden_query_and_total_are_exported_once_ready(minilm_scorer: Scorer) -> None:
    gc.unfreeze()  # what other tests' apps froze
    async with serving(minilm_scorer) as (app, _):
        # Start-up's heap is out of the collector's walks once the server is ready.
        assert gc.get_freeze_count() > 100_000
        registry = app.state.metrics.registry

        def seconds(phase: str) -> float | None:
            return registry.get_sample_value("kuberank_startup_seconds", {"phase": phase})

        golden, total = seconds("golden_query"), seconds("total")
        assert golden is not None and golden > 0
        assert total is not None and total >= golden
        # The scorer was started by the test session, not by this app.
        assert seconds("engine") is None and seconds("download") is None


async def test_a_phase_logs_progress_and_its_duration(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(startup, "PROGRESS_INTERVAL_SECONDS", 0.05)
    metrics = ServerMetrics()
    phases = StartupPhases(metrics)
    with caplog.at_level("INFO", logger="kuberank_server.startup"):
        async with phases.phase("engine", "starting the engine"):
            await asyncio.sleep(0.18)
        phases.finish()
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "start-up: starting the engine ..."
    assert sum(m.startswith("start-up: starting the engine ... ") for m in messages) >= 2
    assert any(m.startswith("start-up: starting the engine: done in 0.") for m in messages)
    assert messages[-1].startswith("start-up: ready (engine 0.")
    engine = metrics.registry.get_sample_value("kuberank_startup_seconds", {"phase": "engine"})
    assert engine is not None and 0.18 <= engine < 5


async def test_a_failed_phase_records_no_duration() -> None:
    metrics = ServerMetrics()
    phases = StartupPhases(metrics)
    with pytest.raises(RuntimeError):
        async with phases.phase("download", "downloading"):
            raise RuntimeError("hub unreachable")
    assert phases.seconds == {}


def test_compile_cache_dir_becomes_vllm_cache_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CACHE_ROOT", "/somewhere/else")
    use_compile_cache(None)  # unset: vLLM's own default stays
    assert os.environ["VLLM_CACHE_ROOT"] == "/somewhere/else"
    use_compile_cache("/models/.vllm-cache")
    assert os.environ["VLLM_CACHE_ROOT"] == "/models/.vllm-cache"


def test_dev_quiets_vllm_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    quiet_engine_logs()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "ERROR"
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")
    quiet_engine_logs()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "DEBUG"


def test_the_compile_cache_fix_is_a_vllm_plugin() -> None:
    plugins = {plugin.name: plugin.value for plugin in entry_points(group="vllm.general_plugins")}
    assert plugins.get("kuberank_compile_cache") == "kuberank_server.engine.vllm_plugin:register", (
        "the installed kuberank package lacks its vLLM plugin entry point: run `make setup`"
    )


@pytest.mark.engine
async def test_a_second_start_loads_the_compile_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two engine starts on one compile cache directory: the first compiles and saves the
    model; the second loads it, so it saves nothing (a failed load compiles and saves again:
    vLLM writes a new file, atomically)."""
    monkeypatch.setenv("VLLM_CACHE_ROOT", "unused")  # restored after the test

    async def start_and_stop() -> os.stat_result:
        scorer = await Scorer.start(server_settings(compile_cache_dir=tmp_path))
        scorer.shutdown()
        return saved_model(tmp_path)

    cold = await start_and_stop()
    warm = await start_and_stop()
    assert (warm.st_ino, warm.st_mtime_ns) == (cold.st_ino, cold.st_mtime_ns), (
        "the second start compiled again instead of loading the cache"
    )


def saved_model(cache_root: Path) -> os.stat_result:
    """The one compiled model vLLM saved under `cache_root`."""
    [artifact] = cache_root.glob("torch_compile_cache/torch_aot_compile/*/rank_*/model")
    return artifact.stat()
