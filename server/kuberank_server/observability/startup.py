"""Start-up as phases: each one logged when it begins, every few seconds while it lasts, and
with its duration when it ends, and exported as `kuberank_startup_seconds{phase}`.

A pod's start is the autoscaler's reaction time, so it should be visible, and measured:
- `download`: the model's files from the Hugging Face hub (hub ids only; not for a local path
  or the embedded model);
- `engine`: vLLM's engine start: weights, torch.compile (or its cache), KV cache, warm-up;
- `golden_query`: the built-in query that must rank its relevant document first;
- `total`: from the app's start to ready.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kuberank_server.observability.metrics import ServerMetrics

log = logging.getLogger("kuberank_server.startup")

PROGRESS_INTERVAL_SECONDS = 10.0
# vLLM's engine processes read it at import; they inherit it from this one.
VLLM_CACHE_ROOT = "VLLM_CACHE_ROOT"


class StartupPhases:
    def __init__(self, metrics: ServerMetrics | None = None) -> None:
        self.metrics = metrics
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}

    @asynccontextmanager
    async def phase(self, name: str, doing: str) -> AsyncIterator[None]:
        log.info("start-up: %s ...", doing)
        begun = time.monotonic()
        ticker = asyncio.create_task(self._tick(doing, begun))
        try:
            yield
        finally:
            ticker.cancel()
        self.record(name, time.monotonic() - begun)
        log.info("start-up: %s: done in %.1f s", doing, self.seconds[name])

    def finish(self) -> None:
        """Start-up is over (ready): record the total."""
        self.record("total", time.monotonic() - self.started)
        summary = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())
        log.info("start-up: ready (%s)", summary)

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = seconds
        if self.metrics is not None:
            self.metrics.startup_seconds.labels(phase=name).set(seconds)

    @staticmethod
    async def _tick(doing: str, begun: float) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
            log.info("start-up: %s ... %.0f s", doing, time.monotonic() - begun)


def use_compile_cache(directory: str | os.PathLike[str] | None) -> None:
    """Point vLLM's compile cache (`VLLM_CACHE_ROOT`) at `directory`, before the engine starts.

    On a volume the replicas share (the model cache), the first pod compiles and the next ones
    load its artifacts; vLLM keys them by model, config and code, so a mismatch recompiles."""
    if directory is None:
        return
    os.environ[VLLM_CACHE_ROOT] = str(directory)
    log.info("vLLM compile cache: %s", directory)
