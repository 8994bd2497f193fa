"""Per-subject token buckets: one noisy client cannot starve the others."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kuberank_server.errors import RateLimitedError

# Past this many tracked subjects, buckets that have refilled completely are dropped: a
# full bucket is exactly what a new subject starts with, so forgetting it changes nothing.
PRUNE_ABOVE_SUBJECTS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class SubjectRateLimiter:
    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive; leave the limiter out to turn it off")
        self._per_second = per_second
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, subject: str) -> None:
        """Take one request from `subject`'s bucket, or raise RateLimitedError."""
        now = self._clock()
        bucket = self._buckets.get(subject)
        if bucket is None:
            if len(self._buckets) >= PRUNE_ABOVE_SUBJECTS:
                self._prune(now)
            bucket = self._buckets[subject] = _Bucket(self._burst, now)
        bucket.tokens = min(
            self._burst, bucket.tokens + (now - bucket.updated_at) * self._per_second
        )
        bucket.updated_at = now
        if bucket.tokens < 1:
            raise RateLimitedError(
                f"rate limit of {self._per_second:g} requests/s for this token's subject exceeded",
                retry_after_seconds=(1 - bucket.tokens) / self._per_second,
            )
        bucket.tokens -= 1

    def _prune(self, now: float) -> None:
        refill_seconds = self._burst / self._per_second
        self._buckets = {
            subject: bucket
            for subject, bucket in self._buckets.items()
            if now - bucket.updated_at < refill_seconds
        }
