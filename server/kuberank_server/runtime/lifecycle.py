"""Readiness, the concurrency limit (scoring slots and queue) and draining.

`/ready` is 200 only in the `ready` state. On SIGTERM the server enters `draining`: `/ready`
turns 503 at once and new API requests get 503, while requests already accepted finish
(up to `--drain-timeout-seconds`), then the process exits 0. Admission keeps the accepted
work within what that budget can finish; whatever is still unanswered when it is spent is
cut (its engine work aborted) and answered 503 with `Retry-After`, never left to the server's
shutdown (which would answer 500).
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import uvicorn

from kuberank_server.http.errors import NotReadyError, RateLimitedError
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.runtime.queue_wait import WorkEstimator

log = logging.getLogger("kuberank_server.serve")

State = Literal["starting", "ready", "failed", "draining"]
_IDLE_POLL_SECONDS = 0.05
# How long cut requests have to send their 503 before the server shuts down.
_CUT_ANSWER_SECONDS = 2.0


class Lifecycle:
    def __init__(self) -> None:
        self.state: State = "starting"
        self.reason = "the engine is starting"
        # API requests between acceptance and their response (auth, queue, scoring).
        self.active_requests = 0
        # Set once start-up is over, whether it ended ready or failed.
        self.settled = asyncio.Event()
        # How to cut each request being handled now: abort its work and answer it 503.
        self._cutters: set[Callable[[], None]] = set()

    def mark_ready(self) -> None:
        if self.state == "starting":
            self.state, self.reason = "ready", "ready"
        self.settled.set()

    def mark_failed(self, reason: str) -> None:
        if self.state != "draining":
            self.state, self.reason = "failed", reason
        self.settled.set()

    def begin_drain(self) -> None:
        self.state, self.reason = "draining", "the server is shutting down"

    def require_serving(self) -> None:
        if self.state != "ready":
            raise NotReadyError(f"not serving: {self.reason}")

    @contextmanager
    def cuttable(self, cut: Callable[[], None]) -> Iterator[None]:
        """While this block runs, a drain past its budget calls `cut`."""
        self._cutters.add(cut)
        try:
            yield
        finally:
            self._cutters.discard(cut)

    def cut_remaining(self) -> int:
        """Cut every request still being handled; how many there were."""
        cutters = list(self._cutters)
        for cut in cutters:
            cut()
        return len(cutters)

    async def wait_idle(self, timeout_seconds: float) -> bool:
        """True once no accepted request is left, False if the timeout came first."""
        deadline = time.monotonic() + timeout_seconds
        while self.active_requests > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_IDLE_POLL_SECONDS)
        return True


class ConcurrencyLimiter:
    """Admission, by request count and by work. At most `max_concurrent` requests score at
    once and `max_queued` wait for a slot; and a request is admitted only if the work accepted
    ahead of it (in prompt tokens, at the measured throughput, see `queue_wait`) finishes within
    `max_wait_seconds`, and all accepted work, its own included, within `drain_seconds` (what
    a drain can finish; 0 sets no such bound). Refused requests get 429 at once, with a
    `Retry-After` that books their turn."""

    def __init__(
        self,
        max_concurrent: int,
        max_queued: int,
        metrics: ServerMetrics,
        max_wait_seconds: float = math.inf,
        drain_seconds: float = 0.0,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.max_wait_seconds = max_wait_seconds
        self.drain_seconds = drain_seconds
        self.in_flight = 0
        self.waiting = 0
        self.work = WorkEstimator()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._metrics = metrics
        # Queued or scoring, read at scrape time: rises with concurrent callers long before
        # the queue forms (vLLM queues inside, so `waiting` stays 0 until every slot is taken).
        metrics.requests_in_progress.set_function(lambda: self.in_flight + self.waiting)

    @asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[None]:
        """Admission for a request of `tokens` prompt tokens, then a scoring slot."""
        if self.in_flight + self.waiting >= self.max_concurrent + self.max_queued:
            # Room comes back when about one request's work is done, after the turns booked.
            retry = self.work.book_turn(tokens, max(0, self.work.backlog_tokens - tokens))
            raise RateLimitedError(
                f"server at capacity ({self.in_flight} scoring, {self.waiting} queued; expected "
                f"wait {self.work.seconds_for(self.work.backlog_tokens):.1f} s)",
                retry_after_seconds=retry,
            )
        verdict = self.work.admit(
            tokens, max_wait_seconds=self.max_wait_seconds, drain_seconds=self.drain_seconds
        )
        if not verdict.admitted:
            raise RateLimitedError(
                f"server busy: {verdict.reason}", retry_after_seconds=verdict.retry_after_seconds
            )
        self.work.accepted(tokens)
        completed = False
        try:
            self._set_waiting(self.waiting + 1)
            try:
                await self._slots.acquire()
            finally:
                self._set_waiting(self.waiting - 1)
            self._set_in_flight(self.in_flight + 1)
            try:
                yield
                completed = True
            finally:
                self._set_in_flight(self.in_flight - 1)
                self._slots.release()
        finally:
            self.work.finished(tokens, completed=completed)

    def _set_waiting(self, value: int) -> None:
        self.waiting = value
        self._metrics.requests_waiting.set(value)

    def _set_in_flight(self, value: int) -> None:
        self.in_flight = value
        self._metrics.requests_in_flight.set(value)


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM/SIGINT drains first, and the process exits 0 afterwards
    (uvicorn re-raises the caught signal on exit, which would make the exit status 143)."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_seconds: float):
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_seconds = drain_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._drain is not None:
            # Not started yet, or a second signal: stop now.
            self.should_exit = True
            self.force_exit = self._drain is not None and sig == signal.SIGINT
            return
        log.info("signal %s: draining (up to %.0f s)", signal.Signals(sig).name,
                 self.drain_seconds)  # fmt: skip
        self.lifecycle.begin_drain()
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        started = time.monotonic()
        finished = await self.lifecycle.wait_idle(self.drain_seconds)
        if not finished:
            cut = self.lifecycle.cut_remaining()
            log.warning("drain budget of %g s spent: %d unfinished requests cut and answered "
                        "503 (retry on another replica)", self.drain_seconds, cut)  # fmt: skip
            await self.lifecycle.wait_idle(_CUT_ANSWER_SECONDS)
        log.info(
            "drain %s after %.2f s; shutting down",
            "complete" if finished else "timed out", time.monotonic() - started,
        )  # fmt: skip
        self.should_exit = True


# Kubernetes keeps at most this much of a container's termination message.
TERMINATION_MESSAGE_MAX_BYTES = 4096


def write_termination_message(path: Path | None, message: str) -> None:
    """Leave why the process failed where Kubernetes reads it into the pod's status
    (`lastState.terminated.message`), so the operator can show it on the RerankerService."""
    if path is None:
        return
    data = message.encode()[:TERMINATION_MESSAGE_MAX_BYTES].decode(errors="ignore")
    try:
        path.write_text(data)
    except OSError as error:  # the reason is in the log already; this is a convenience
        log.warning("could not write the termination message to %s: %s", path, error)
