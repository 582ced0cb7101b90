"""The finish stage: DC removal, the model's end fade and the clip, alone and inside generation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.config import ModelConfig
from models.errors import ConfigError
from models.finish import fade_out, fade_samples, finish, remove_dc
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


def test_finish_clips_to_full_scale_and_returns_float32():
    x = np.concatenate([np.full(100, 3.0), np.full(100, -3.0)])
    out = finish(x, RATE)
    assert out.dtype == np.float32 and out.max() <= 1.0 and out.min() >= -1.0


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
