"""The JACK tests' comparison of what was recorded with what should have been heard."""

from __future__ import annotations

import numpy as np

from tests.conftest_jack import PERIOD, matching


def _sound(seed=0, frames=24_576):
    return np.random.default_rng(seed).standard_normal((frames, 2)).astype(np.float32)


def test_a_skipped_or_repeated_period_costs_a_block_not_the_rest_of_the_sound():
    x, tail = _sound(), np.zeros((3000, 2), np.float32)
    assert matching(np.concatenate([x, tail]), x) == 1.0
    skipped = np.concatenate([x[:10_000], x[10_000 + PERIOD:], tail])  # the recorder missed a JACK cycle
    repeated = np.concatenate([x[:10_000], x[10_000 - PERIOD:], tail])
    assert 0.95 < matching(skipped, x) < 1.0
    assert matching(repeated, x) > 0.95


def test_a_wrong_sound_gain_or_start_matches_nowhere():
    x = _sound()
    assert matching(0.5 * x, x) == 0.0
    assert matching(_sound(1), x) == 0.0
    assert matching(np.concatenate([np.zeros((PERIOD // 2, 2), np.float32), x]), x) == 0.0  # off by half a period
    assert matching(x[:12_288], x) == 0.5  # half the sound recorded: half heard
    assert matching(x[:0], x) == 0.0
