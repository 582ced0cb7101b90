"""The finish stage: the start guard, DC removal, the model's end fade and full scale, alone and inside generation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.config import ModelConfig
from models.errors import ConfigError
from models.finish import (
    CEILING,
    GUARD_RATIO,
    fade_out,
    fade_samples,
    finish,
    fit_full_scale,
    guard_start,
    remove_dc,
)
from models.generate import SamplingOptions, generate, variation
from tests.reference_nets import tiny_backend

RATE = 44100


def _level_db(x: np.ndarray, freq: float) -> float:
    """Level of a sine at `freq` in x, in dB re its amplitude 1 (least squares on sin/cos)."""
    t = np.arange(x.shape[-1]) / RATE
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return 20 * np.log10(np.hypot(*coef))


def test_remove_dc_takes_the_offset_and_the_drift_but_keeps_the_music():
    t = np.arange(32768) / RATE
    music = 0.5 * np.sin(2 * np.pi * 55.0 * t) + 0.2 * np.sin(2 * np.pi * 1000.0 * t)
    drift = 0.05 + 0.02 * np.sin(2 * np.pi * 1.5 * t)  # an offset that wanders, as diffusion leaves it
    out = remove_dc(np.stack([music + drift, music - drift]), RATE)
    assert out.shape == (2, 32768)
    middle = slice(4096, -4096)  # away from the ends, where any filter has to start and stop
    assert abs(out[0, middle].mean()) < 2e-3 and abs(out[1, middle].mean()) < 2e-3
    assert abs(_level_db(out[0], 55.0) - 20 * np.log10(0.5)) < 0.05  # -0.02 dB at 55 Hz
    assert abs(_level_db(out[0], 1000.0) - 20 * np.log10(0.2)) < 0.01
    residual = out[0, middle] - music[middle]
    assert np.sqrt(np.mean(residual**2)) < 3e-3


def test_remove_dc_does_not_smear_the_end_into_the_start():
    x = np.zeros(8192)
    x[-10:] = 1.0  # a burst at the very end must not wrap round to sample 0
    out = remove_dc(x, RATE)
    assert np.abs(out[:4096]).max() < 0.01


def test_fade_out_reaches_silence_over_the_last_milliseconds():
    x = np.ones((2, 32768))
    out = fade_out(x, RATE, 50.0)
    n = fade_samples(RATE, 50.0, 32768)
    assert n == 2205
    np.testing.assert_array_equal(out[:, :-n], 1.0)
    assert np.all(np.diff(out[0, -n:]) <= 0) and out[0, -1] == 0.0
    assert abs(out[0, -n // 2] - 0.5) < 0.01  # cos² is at one half halfway through
    short = fade_out(np.ones(800), RATE, 50.0)  # never more than an eighth of the sound
    assert short[-99:].max() < 1.0 and short[-1] == 0.0 and np.all(short[:-100] == 1.0)
    np.testing.assert_array_equal(fade_out(x, RATE, 0.0), x)


@pytest.mark.parametrize("bad", [-1.0, 1000.5, float("nan")])
def test_fade_out_refuses_out_of_range_lengths(bad):
    with pytest.raises(ConfigError, match=r"fade_ms must be in 0\.\.1000"):
        fade_out(np.ones(100), RATE, bad)


def test_finish_turns_a_sound_past_full_scale_down_instead_of_clipping_it():
    t = np.arange(8192) / RATE
    loud = 1.6 * np.sin(2 * np.pi * 220.0 * t) * np.exp(-t / 0.05)  # peaks at 1.6
    out = finish(loud, RATE)
    assert out.dtype == np.float32
    assert abs(np.abs(out).max() - CEILING) < 1e-6 and CEILING == pytest.approx(10 ** (-0.1 / 20))
    np.testing.assert_allclose(out, remove_dc(loud, RATE) * CEILING / np.abs(remove_dc(loud, RATE)).max(), atol=1e-6)
    assert np.sum(np.abs(out) >= CEILING - 1e-6) == 1  # one peak, not a flat-topped (clipped) run
    quiet = 0.5 * np.sin(2 * np.pi * 220.0 * t)
    np.testing.assert_allclose(finish(quiet, RATE), remove_dc(quiet, RATE), atol=1e-6)  # within full scale: as is


def test_the_start_guard_takes_the_window_edge_spike_and_keeps_a_real_attack():
    t = np.arange(4096) / RATE
    body = 0.5 * np.sin(2 * np.pi * 110.0 * t + 1.0) * np.exp(-t / 0.1)  # starts abruptly at 0.42
    spiked = np.stack([body, body]).copy()
    spiked[0, :3] = [1.7, 0.9, -0.8]  # what the network's window edge does to some sounds
    out = guard_start(spiked, RATE)
    n = int(round(0.2e-3 * RATE))
    reference = np.abs(spiked[:, n:n + 88]).max()
    assert np.abs(out[:, :n]).max() == pytest.approx(GUARD_RATIO * reference)
    np.testing.assert_array_equal(out[:, n:], spiked[:, n:])  # nothing after the first 0.2 ms
    np.testing.assert_array_equal(out[1], spiked[1])  # the other channel had no spike
    hat = np.random.default_rng(1).standard_normal((2, 4096)) * np.exp(-t / 0.01)  # a real attack: loudest first
    np.testing.assert_array_equal(guard_start(hat, RATE), hat)
    short = np.ones(50)  # too short to have a reference: unchanged
    np.testing.assert_array_equal(guard_start(short, RATE), short)
    assert np.abs(finish(spiked, RATE)[:, :n]).max() < 0.7  # and finish runs it


def test_the_start_guard_leaves_the_synthesizers_sounds_almost_alone():
    from models import synth

    sounds = [synth.synthesize(name, np.random.default_rng([5, i]), 16384, RATE)
              for i, name in enumerate(synth.CATEGORIES * 3)]
    changed = [float(np.abs(guard_start(s, RATE) - s).max()) for s in sounds]
    assert sum(c > 0 for c in changed) <= 2 and max(changed) < 0.02


def test_full_scale_is_fitted_per_item_so_the_batch_does_not_matter():
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((3, 2, 4096)) * np.array([0.1, 0.6, 1.0])[:, None, None]  # one quiet item
    out = fit_full_scale(batch)
    for i in range(3):
        np.testing.assert_array_equal(fit_full_scale(batch[i]), out[i])
    np.testing.assert_array_equal(out[0], batch[0])
    assert np.abs(out[1:]).max(axis=(1, 2)) == pytest.approx([CEILING, CEILING])
    # the channels of an item keep their balance: one gain for the whole item
    assert np.abs(out[2, 0]).max() / np.abs(out[2, 1]).max() == pytest.approx(
        np.abs(batch[2, 0]).max() / np.abs(batch[2, 1]).max())


@pytest.mark.parametrize("bad", [-5, 1001, True, "50"])
def test_the_config_checks_fade_out_ms(bad):
    with pytest.raises(ConfigError, match="fade_out_ms must be a number of milliseconds in 0..1000"):
        ModelConfig(name="x", sample_size=65536, fade_out_ms=bad)


def test_the_fade_travels_in_the_config_json():
    config = ModelConfig(name="x", fade_out_ms=50)
    assert ModelConfig.from_json(config.to_json()).fade_out_ms == 50.0
    assert ModelConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "fade_out_ms"}).fade_out_ms == 0


def test_generation_and_variation_end_in_the_models_fade():
    backend = tiny_backend(categories=("kick",), sample_size=4096)
    opts = SamplingOptions("dpmpp-2m", steps=3)
    raw = generate(backend, [3], category="kick", options=opts)[0]
    backend.config = replace(backend.config, fade_out_ms=20.0)
    faded = generate(backend, [3], category="kick", options=opts)[0]
    n = fade_samples(backend.config.sample_rate, 20.0, 4096)
    np.testing.assert_allclose(faded[:, :-n], raw[:, :-n], atol=1e-6)  # the same sound up to the fade
    assert np.abs(faded[:, -1]).max() == 0.0 and np.abs(raw[:, -n:]).max() > 0.01
    varied = variation(backend, raw, [4], strength=0.5, category="kick", options=opts)[0]
    assert np.abs(varied[:, -1]).max() == 0.0
    for sound in (raw, faded, varied):  # no offset left in anything generated
        assert abs(float(sound.mean())) < 0.01
