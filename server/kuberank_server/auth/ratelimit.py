"""Per-subject token buckets: one noisy client cannot starve the others.

A bucket belongs to a subject, or to an API key with a rate of its own; each bucket refills at
its own rate, the limiter's default unless the caller names another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from kuberank_server.http.errors import RateLimitedError

# Past this many tracked subjects, buckets that have refilled completely are dropped: a
# full bucket is exactly what a new subject starts with, so forgetting it changes nothing.
PRUNE_ABOVE_SUBJECTS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated_at: float
    per_second: float


class SubjectRateLimiter:
    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`per_second` is the default rate; 0 limits only the buckets given a rate of their own."""
        if per_second < 0:
            raise ValueError("per_second must not be negative")
        self._per_second = per_second
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}

    def acquire(
        self,
        subject: Hashable,
        per_second: float | None = None,
        holder: str = "this token's subject",
    ) -> None:
        """Take one request from `subject`'s bucket, or raise RateLimitedError naming `holder`.
        `per_second` overrides the default rate for this bucket."""
        rate = self._per_second if per_second is None else per_second
        if rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(subject)
        if bucket is None:
            if len(self._buckets) >= PRUNE_ABOVE_SUBJECTS:
                self._prune(now)
            bucket = self._buckets[subject] = _Bucket(self._burst, now, rate)
        bucket.per_second = rate  # a reloaded key file may have changed it
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated_at) * rate)
        bucket.updated_at = now
        if bucket.tokens < 1:
            raise RateLimitedError(
                f"rate limit of {rate:g} requests/s for {holder} exceeded",
                retry_after_seconds=(1 - bucket.tokens) / rate,
            )
        bucket.tokens -= 1

    def _prune(self, now: float) -> None:
        self._buckets = {
            subject: bucket
            for subject, bucket in self._buckets.items()
            if now - bucket.updated_at < self._burst / bucket.per_second
        }
