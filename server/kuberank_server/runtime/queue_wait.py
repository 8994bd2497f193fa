"""How long the work a pod has accepted takes, and when a refused caller should come back.

Admission is by work, not by request count: an accepted request adds its prompt tokens to the
backlog (queued or scoring) until it is answered, and the engine's throughput turns the backlog
into seconds. Throughput is measured, not configured: tokens finished over the busy time they
took (time with a backlog), in the last ten seconds of it, so the engine's batching under the
load of the moment is accounted for. Finishes close together are measured as one group: a
batching engine finishes the requests it scored together one by one within moments, and the
first alone would be credited the whole batch's time (understating the engine as many times
as the batch had requests); a serial engine's finishes, spaced by each one's work, stay
apart, and a group closes a tenth of its span after its first finish, so a steady stream of
finishes is measured as it goes. Until the first group is measured only the request-count
caps apply (a guess, such as the tiny golden query's rate, would book refused callers' turns
far too late); the drain still cuts what it cannot finish.

A refused caller gets a `Retry-After` that books it a turn: the time at which the backlog will
have drained enough for its work to fit, after every caller refused before it (their turns
are kept, each as long as that caller's work takes), plus a little jitter. A caller that comes
back when its turn is due takes the capacity kept for it; one arriving with no turn due must
fit beside the turns due soon, or it is booked after them. So refused callers do not all
return at the same moment, and a caller who waits its `Retry-After` out is usually served.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Throughput is measured over this much of the most recent busy time.
_WINDOW_SECONDS = 10.0
# A turn is claimed by the first request arriving within this long after its caller was told
# to come back; one not claimed by then is given up (its caller went elsewhere).
_CLAIM_SECONDS = 0.5
# A finish joins the open group if it comes within this fraction of the busy time to the
# group's first finish, counted from that finish; later, the group is closed and measured. A
# batch's finishes come within moments; the bound keeps a steady stream from holding a group
# open (and the estimate unchanged) for as long as the load lasts.
_GROUP_GAP_FRACTION = 0.1
# Retry-After is stretched by up to this fraction, so that equal waits do not return together.
_JITTER_FRACTION = 0.1


@dataclass
class Turn:
    returns_at: float  # when its caller was told to come back (now + Retry-After)
    tokens: int
    ends: float  # when the work booked for it is done, at the measured throughput


@dataclass(frozen=True)
class Verdict:
    """Whether a request is admitted now; if not, why, and the seconds until its turn."""

    admitted: bool
    reason: str = ""
    retry_after_seconds: float = 0.0


class WorkEstimator:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        # (tokens, busy seconds) of the groups measured in the last `_WINDOW_SECONDS` of busy
        # time, oldest first.
        self._samples: deque[tuple[int, float]] = deque()
        self._window_tokens = 0  # their sums, kept as they change (asked on every request)
        self._window_seconds = 0.0
        self.backlog_tokens = 0
        self._clock = clock
        self._jitter = jitter
        # Start of the busy time not measured yet (the last group's end, or when the pod
        # became busy); None while idle.
        self._open_since: float | None = None
        # The open group of finishes: its tokens, its first and its last finish (None: no
        # group open).
        self._group_tokens = 0
        self._group_first_finish: float | None = None
        self._group_last_finish = 0.0
        self.turns: deque[Turn] = deque()

    # --- the backlog ----------------------------------------------------------------------------
    def accepted(self, tokens: int) -> None:
        if self._open_since is None:
            self._open_since = self._clock()
        self.backlog_tokens += tokens

    def finished(self, tokens: int, *, completed: bool) -> None:
        """A request left the backlog; `completed` if the engine did all of its work."""
        now = self._clock()
        self._close_group(now)
        self.backlog_tokens = max(0, self.backlog_tokens - tokens)
        if completed:
            self._group_tokens += tokens
            if self._group_first_finish is None:
                self._group_first_finish = now
            self._group_last_finish = now
        if self.backlog_tokens == 0:  # idle: nothing else can finish with this group
            self._close_group(math.inf)
            self._open_since = None

    def _close_group(self, now: float) -> None:
        """Measure the open group if nothing has joined it for long enough by `now`."""
        first = self._group_first_finish
        if first is None or self._open_since is None:
            return
        if now - first <= _GROUP_GAP_FRACTION * (first - self._open_since):
            return
        measured = self._group_last_finish - self._open_since
        if measured > 0:
            self.observe(self._group_tokens, measured)
        self._open_since = self._group_last_finish
        self._group_tokens, self._group_first_finish = 0, None

    def observe(self, tokens: int, busy_seconds: float) -> None:
        """The engine did `tokens` of work in `busy_seconds`."""
        self._samples.append((tokens, busy_seconds))
        self._window_tokens += tokens
        self._window_seconds += busy_seconds
        while (
            len(self._samples) > 1 and self._window_seconds - self._samples[0][1] >= _WINDOW_SECONDS
        ):
            old_tokens, old_seconds = self._samples.popleft()
            self._window_tokens -= old_tokens
            self._window_seconds -= old_seconds

    @property
    def tokens_per_second(self) -> float | None:
        """Tokens done over busy time in the recent window. At best the engine finishes all it
        has in hand this instant; when even that would be slower than the window's rate, the
        engine has slowed or stalled, and the estimate follows at once."""
        now = self._clock()
        self._close_group(now)
        if not self._samples:
            return None
        tokens, seconds = self._window_tokens, self._window_seconds
        rate = tokens / seconds
        if self._open_since is not None:
            at_best = tokens + self._group_tokens + self.backlog_tokens
            rate = min(rate, at_best / (seconds + now - self._open_since))
        return rate

    def seconds_for(self, tokens: float) -> float:
        """Seconds of engine time for this many tokens (0 while throughput is unknown)."""
        if not self.tokens_per_second:
            return 0.0
        return tokens / self.tokens_per_second

    # --- admission ------------------------------------------------------------------------------
    def admit(self, tokens: int, *, max_wait_seconds: float, drain_seconds: float) -> Verdict:
        """Admit `tokens` of work if the work ahead of it finishes within `max_wait_seconds`
        and all accepted work, its own included, within `drain_seconds` (0: no drain bound).
        An idle pod admits anything (the token budget per request bounds it)."""
        now = self._clock()
        self.turns = deque(turn for turn in self.turns if turn.returns_at >= now - _CLAIM_SECONDS)
        claimed = self._claim_due_turn(now)
        rate = self.tokens_per_second
        if self.backlog_tokens == 0:
            return Verdict(True)
        if not rate:
            return Verdict(True)  # nothing measured yet: the request-count caps alone apply
        allowed = max_wait_seconds * rate
        if drain_seconds > 0:
            allowed = min(allowed, drain_seconds * rate - tokens)
        allowed = max(allowed, 0.0)
        # Room promised to callers coming back soon is not given to one arriving unannounced.
        kept_for_others = (
            0
            if claimed
            else sum(
                turn.tokens for turn in self.turns if turn.returns_at <= now + max_wait_seconds
            )
        )
        if self.backlog_tokens + kept_for_others <= allowed:
            return Verdict(True)
        reason = (
            f"{self.backlog_tokens} tokens of accepted work take about "
            f"{self.backlog_tokens / rate:.1f} s at the recent {rate:.0f} tokens/s"
        )
        if drain_seconds > 0 and (self.backlog_tokens + tokens) / rate > drain_seconds:
            reason += f", over what this pod can finish in its {drain_seconds:g} s drain"
        else:
            reason += f", over this server's bound of {max_wait_seconds:g} s"
        return Verdict(False, reason, self.book_turn(tokens, allowed))

    def _claim_due_turn(self, now: float) -> bool:
        due = [turn for turn in self.turns if turn.returns_at <= now]
        if not due:
            return False
        self.turns.remove(min(due, key=lambda turn: turn.returns_at))
        return True

    def book_turn(self, tokens: int, allowed: float) -> float:
        """Whole seconds until the backlog is down to `allowed` tokens and the turns booked
        earlier are served (jittered): a refused caller's Retry-After, kept as its turn."""
        now = self._clock()
        rate = self.tokens_per_second or 1.0
        drained = now + max(0.0, self.backlog_tokens - allowed) / rate
        starts = max([drained, *(turn.ends for turn in self.turns)])
        retry_after = max(1, math.ceil((starts - now) * (1 + _JITTER_FRACTION * self._jitter())))
        self.turns.append(Turn(now + retry_after, tokens, starts + tokens / rate))
        return retry_after
