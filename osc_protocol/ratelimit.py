"""Bounded reactions to unbounded input: log lines and error replies that a flood cannot multiply.

``LogLimiter`` lets one line per key (source and reason) through per interval and counts the rest, so
the next line can say how many were suppressed. ``TokenBucket`` answers the first few events of a key
at once and then at a steady rate. Both forget every key when too many are tracked (a spoofed flood of
sources must not grow memory). Pure bookkeeping on a monotonic clock: no threads, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

MAX_KEYS = 1024


class LogLimiter:
    """At most one report per key per ``interval`` seconds."""

    def __init__(self, interval: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._seen: dict[Hashable, list] = {}  # key -> [time of the last report, suppressed since]

    def due(self, key: Hashable) -> int | None:
        """The count suppressed since the last report when a report of ``key`` is due now, else None
        (and the event is counted as suppressed)."""
        now = self._clock()
        entry = self._seen.get(key)
        if entry is None:
            if len(self._seen) >= MAX_KEYS:
                self._seen.clear()
            self._seen[key] = [now, 0]
            return 0
        if now - entry[0] >= self.interval:
            suppressed = entry[1]
            entry[0], entry[1] = now, 0
            return suppressed
        entry[1] += 1
        return None


class TokenBucket:
    """Per key: ``burst`` events pass at once, then ``rate`` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens: dict[Hashable, list] = {}  # key -> [tokens, time of the last update]

    def take(self, key: Hashable) -> bool:
        """Whether one more event of ``key`` may pass now (it then uses a token)."""
        now = self._clock()
        entry = self._tokens.get(key)
        if entry is None:
            if len(self._tokens) >= MAX_KEYS:
                self._tokens.clear()
            self._tokens[key] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
        entry[1] = now
        if tokens >= 1.0:
            entry[0] = tokens - 1.0
            return True
        entry[0] = tokens
        return False
