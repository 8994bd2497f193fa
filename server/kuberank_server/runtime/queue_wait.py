"""How long a request arriving now would wait for a scoring slot.

With every slot busy, a slot frees up each `service / concurrency` seconds on average, where
`service` is how long a request recently held its slot (under the same load, so batching in
the engine is accounted for); the newcomer waits for everyone queued ahead of it, plus one.
Until requests have finished, or when they suddenly take longer (an engine that slowed down,
a burst of large requests), the mean age of the requests now scoring bounds `service` from
below, so the estimate never trails reality by a whole burst.
"""

from __future__ import annotations

import time

# Weight of the newest observation: about the last ten requests make the estimate.
_SMOOTHING = 0.1


class QueueWaitEstimator:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.service_seconds: float | None = None
        self._started: dict[int, float] = {}
        self._next_ticket = 0

    def started(self) -> int:
        """A request took a slot; its ticket goes back to `finished`."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._started[ticket] = time.monotonic()
        return ticket

    def finished(self, ticket: int) -> None:
        seconds = time.monotonic() - self._started.pop(ticket)
        if self.service_seconds is None:
            self.service_seconds = seconds
        else:
            self.service_seconds += _SMOOTHING * (seconds - self.service_seconds)

    def expected_wait(self, queued_ahead: int) -> float:
        """Seconds until a request arriving now gets a slot (0 while one is free)."""
        if len(self._started) < self.concurrency:
            return 0.0
        now = time.monotonic()
        mean_age = sum(now - started for started in self._started.values()) / len(self._started)
        service = max(self.service_seconds or 0.0, mean_age)
        return (queued_ahead + 1) * service / self.concurrency
