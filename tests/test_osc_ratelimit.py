"""The rate limiters behind the OSC server's refusal logs and error replies, on a fake clock."""

from __future__ import annotations

import pytest

from osc_protocol.ratelimit import MAX_KEYS, LogLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_limiter_reports_once_per_interval_with_the_count_suppressed():
    clock = Clock()
    limiter = LogLimiter(5.0, clock)
    assert limiter.due(("10.0.0.1", "malformed")) == 0  # the first is reported at once
    assert [limiter.due(("10.0.0.1", "malformed")) for _ in range(7)] == [None] * 7
    assert limiter.due(("10.0.0.1", "bad_type")) == 0  # another reason has its own line
    assert limiter.due(("10.0.0.2", "malformed")) == 0  # and so has another source
    clock.now += 5.0
    assert limiter.due(("10.0.0.1", "malformed")) == 7
    assert limiter.due(("10.0.0.1", "malformed")) is None


def test_token_bucket_lets_a_burst_through_then_the_rate():
    clock = Clock()
    bucket = TokenBucket(rate=5.0, burst=3, clock=clock)
    assert [bucket.take("a") for _ in range(5)] == [True, True, True, False, False]
    assert bucket.take("b")  # another source still gets its first at once
    clock.now += 0.2  # one token back at 5 per second
    assert [bucket.take("a") for _ in range(2)] == [True, False]
    clock.now += 60.0  # never more than the burst saved up
    assert sum(bucket.take("a") for _ in range(10)) == 3


def test_many_keys_are_forgotten_rather_than_kept():
    clock = Clock()
    bucket, limiter = TokenBucket(1.0, 1, clock), LogLimiter(5.0, clock)
    for n in range(MAX_KEYS + 10):
        bucket.take(n)
        limiter.due(n)
    assert len(bucket._tokens) <= MAX_KEYS and len(limiter._seen) <= MAX_KEYS


def test_bad_bucket_settings_are_refused():
    with pytest.raises(ValueError, match="rate must be > 0 and burst >= 1, got rate=0 burst=1"):
        TokenBucket(0, 1)
