"""The finish stage: the start guard, DC removal, the tail gate, the model's end fade and full scale, alone and inside
generation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.config import ModelConfig
from models.errors import ConfigError
from models.finish import (
    CEILING,
    GATE_RATIO,
    GUARD_RATIO,
    check_tail_gate,
    fade_out,
    fade_samples,
    finish,
    fit_full_scale,
    gate_tail,
    guard_start,
    remove_dc,
)
from models.generate import SamplingOptions, generate, morph, variation
from tests.reference_nets import OracleBackend, tiny_backend

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


def _decay_over_floor(floor_db: float = -60.0, seconds: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """A decaying 220 Hz tone (-6 dB every 25 ms after 20 ms) and, separately, a steady hiss ``floor_db`` under
    the tone's peak: what a small network leaves where its sound should have died away."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = np.sin(2 * np.pi * 220 * t) * np.minimum(1.0, 0.5 ** ((t - 0.02) / 0.025))
    hiss = np.random.default_rng(0).standard_normal((2, t.size)) * 10 ** (floor_db / 20)
    return np.stack([tone, tone]) * 0.8, hiss * 0.8


def _rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(x * x)) + 1e-30)


def test_the_tail_gate_takes_the_floor_out_of_the_tail_and_leaves_the_body():
    tone, hiss = _decay_over_floor()
    gated = gate_tail(tone + hiss, RATE, -40.0)
    body, tail = slice(0, int(0.08 * RATE)), slice(int(0.4 * RATE), None)  # the tone is 120 dB down by 0.4 s
    # the body (the tone's first 40 dB of decay) is untouched
    np.testing.assert_allclose(gated[:, body], (tone + hiss)[:, body], atol=1e-9)
    # the hiss left alone in the tail sits 60 dB under the tone's peak; the gate takes it down by more than 40 dB
    assert _rms_db(gated[:, tail]) < _rms_db(hiss[:, tail]) - 40.0
    # and it steepens the last of the decay rather than chopping it: no step bigger than the release allows
    gain_db = 20 * np.log10(np.abs(gated[0, : int(0.2 * RATE)]) / np.maximum(np.abs((tone + hiss)[0, : int(0.2 * RATE)]), 1e-12) + 1e-30)
    audible = np.abs((tone + hiss)[0, : int(0.2 * RATE)]) > 1e-3
    per_ms = np.abs(np.diff(gain_db[audible][:: RATE // 1000]))
    assert per_ms.max() < 3.0 * GATE_RATIO


def test_the_tail_gate_lets_a_second_hit_through():
    tone, hiss = _decay_over_floor()
    late = np.zeros_like(tone)
    start = int(0.45 * RATE)  # a flam long after the first hit has died into the floor
    late[:, start:] = tone[:, : tone.shape[1] - start]
    gated = gate_tail(tone + late + hiss, RATE, -40.0)
    hit = slice(start, start + int(0.03 * RATE))
    assert _rms_db(gated[:, hit]) == pytest.approx(_rms_db((late + hiss)[:, hit]), abs=0.5)


def test_the_tail_gate_leaves_the_synthesizers_sounds_almost_alone():
    """On the sounds the default model learned from (which end in real silence, not a floor), the gate at the
    default model's threshold changes nothing audible: what it takes is at least 45 dB under the sound, and
    typically about 70 dB (measured: at most -48.7 dB, median -72 dB)."""
    from models import synth
    from models.default_recipe import DEFAULT_CONFIG

    sounds = np.stack([synth.synthesize(name, np.random.default_rng([6, i]), 32768, RATE)
                       for i, name in enumerate(synth.CATEGORIES * 2)]).astype(np.float64)
    gated = gate_tail(sounds, RATE, DEFAULT_CONFIG.tail_gate_db)
    change = [_rms_db(g - s) - _rms_db(s) for g, s in zip(gated, sounds, strict=True)]
    assert max(change) < -45.0 and float(np.median(change)) < -65.0


def test_the_tail_gate_is_per_item_and_off_at_zero():
    tone, hiss = _decay_over_floor()
    batch = np.stack([tone + hiss, 0.01 * (tone + hiss), np.zeros_like(tone)])  # a quiet item and a silent one
    out = gate_tail(batch, RATE, -40.0)
    np.testing.assert_allclose(out[1], 0.01 * out[0], rtol=1e-9, atol=1e-15)  # each item against its own peak
    np.testing.assert_array_equal(out[2], 0.0)
    mono = batch[0, 0]  # a mono [samples] item is gated as one channel
    np.testing.assert_allclose(gate_tail(mono, RATE, -40.0), gate_tail(mono[None], RATE, -40.0)[0])
    np.testing.assert_array_equal(gate_tail(batch, RATE, 0.0), batch)
    np.testing.assert_array_equal(finish(batch, RATE, tail_gate_db=0.0), finish(batch, RATE))


@pytest.mark.parametrize("bad", [-5, -121, 3, True, "-40", None])
def test_tail_gate_thresholds_out_of_range_are_refused_by_name(bad):
    with pytest.raises(ConfigError, match=r"tail_gate_db must be 0 \(off\) or a number of dB in -120..-10"):
        check_tail_gate(bad)
    with pytest.raises(ConfigError, match="tail_gate_db"):
        ModelConfig(name="x", tail_gate_db=bad)
    with pytest.raises(ConfigError, match="tail_gate_db"):
        SamplingOptions(tail_gate_db=bad).resolved(ModelConfig(name="x")) if bad is not None else check_tail_gate(bad)


def test_the_models_tail_gate_applies_unless_the_caller_chooses():
    config = ModelConfig(name="x", tail_gate_db=-40)
    assert ModelConfig.from_json(config.to_json()).tail_gate_db == -40.0
    assert ModelConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "tail_gate_db"}).tail_gate_db == 0
    assert SamplingOptions().resolved(config).tail_gate_db == -40.0
    assert SamplingOptions(tail_gate_db=0).resolved(config).tail_gate_db == 0.0  # the user turns it off
    assert SamplingOptions(tail_gate_db=-60).resolved(config).tail_gate_db == -60.0
    assert SamplingOptions().resolved(ModelConfig(name="y")).tail_gate_db == 0.0


def test_generation_and_variation_apply_the_tail_gate():
    tone, hiss = _decay_over_floor(seconds=32768 / RATE)
    backend = OracleBackend(tone + hiss, sample_rate=RATE, categories=("kick",))
    opts = SamplingOptions("dpmpp-2m", steps=4)
    head, tail = slice(0, int(0.05 * RATE)), slice(int(0.4 * RATE), None)
    plain = generate(backend, [3], category="kick", options=opts)[0]
    assert _rms_db(plain[:, tail]) == pytest.approx(_rms_db(hiss[:, tail]), abs=1.0)  # the floor, as the model left it
    gated = generate(backend, [3], category="kick", options=replace(opts, tail_gate_db=-40.0))[0]
    assert _rms_db(gated[:, tail]) < _rms_db(plain[:, tail]) - 40.0
    np.testing.assert_allclose(gated[:, head], plain[:, head], atol=1e-6)
    varied = variation(backend, tone + hiss, [4], strength=0.5, category="kick", options=replace(opts, tail_gate_db=-40.0))
    assert _rms_db(varied[0, :, tail]) < _rms_db(plain[:, tail]) - 40.0
    backend.config = replace(backend.config, tail_gate_db=-40.0)  # the model's recommendation applies by default
    np.testing.assert_allclose(generate(backend, [3], category="kick", options=opts)[0], gated, atol=1e-6)
    off = generate(backend, [3], category="kick", options=replace(opts, tail_gate_db=0.0))[0]  # and can be turned off
    np.testing.assert_allclose(off, plain, atol=1e-6)


def test_cli_generate_takes_the_tail_gate_and_writes_it_in_the_recipe(tmp_path, capsys):
    import json

    from companion.cli.main import main
    from tests.reference_nets import save_tiny

    path = save_tiny(tmp_path / "g.safetensors", tail_gate_db=-30.0)
    out = tmp_path / "out"
    base = ["generate", "--model", str(path), "--category", "kick", "--steps", "2", "--sampler", "dpmpp-2m",
            "--out", str(out), "--count", "1"]

    def recipe_of(seed: str) -> dict:
        sidecar = next(p for p in out.rglob("dd_*.json") if json.loads(p.read_text())["recipe"]["seed"] == int(seed))
        return json.loads(sidecar.read_text())["recipe"]

    assert main(base + ["--seed", "7"]) == 0
    assert recipe_of("7")["tail_gate_db"] == -30.0  # the model's recommendation
    assert main(base + ["--seed", "8", "--tail-gate", "-60"]) == 0
    assert recipe_of("8")["tail_gate_db"] == -60.0
    assert main(base + ["--seed", "9", "--tail-gate", "0"]) == 0
    assert recipe_of("9")["tail_gate_db"] == 0.0
    capsys.readouterr()
    assert main(base + ["--seed", "10", "--tail-gate", "5"]) == 2
    assert "tail_gate_db must be 0 (off) or a number of dB in -120..-10" in capsys.readouterr().err


def test_morph_applies_the_tail_gate_it_is_given_else_the_models():
    tone, hiss = _decay_over_floor(seconds=32768 / RATE)
    backend = OracleBackend(tone + hiss, sample_rate=RATE, categories=("kick",), tail_gate_db=-40.0)
    tail = slice(int(0.4 * RATE), None)
    source = (tone + hiss).astype(np.float32)
    plain = morph(backend, source, source, 2, category="kick", steps=4, tail_gate_db=0.0)
    gated = morph(backend, source, source, 2, category="kick", steps=4, tail_gate_db=-40.0)
    assert _rms_db(plain[0, :, tail]) == pytest.approx(_rms_db(hiss[:, tail]), abs=1.0)  # the floor, left alone
    assert _rms_db(gated[0, :, tail]) < _rms_db(plain[0, :, tail]) - 40.0
    np.testing.assert_array_equal(morph(backend, source, source, 2, category="kick", steps=4), gated)  # the model's


def test_cli_morph_gets_the_tail_gate_its_recipe_records(tmp_path, monkeypatch):
    import json

    import soundfile as sf

    import companion.cli.generate as cmd_generate
    from companion.cli.main import main
    from tests.reference_nets import save_tiny

    given = []

    def spy(*args, **kwargs):  # the real morph, noting the gate it was given
        given.append(kwargs["tail_gate_db"])
        return morph(*args, **kwargs)

    monkeypatch.setattr(cmd_generate, "morph", spy)
    path = save_tiny(tmp_path / "m.safetensors", tail_gate_db=-30.0, guidance=2.0)
    rng = np.random.default_rng(0)
    sources = []
    for name in ("a", "b"):
        sources.append(tmp_path / f"{name}.wav")
        sf.write(sources[-1], (0.3 * rng.standard_normal((512, 2))).astype(np.float32), 16000)
    for gate, applied in ((["--tail-gate", "0"], 0.0), (["--tail-gate", "-60"], -60.0), ([], -30.0)):
        out = tmp_path / f"out{applied:g}"
        assert main(["generate", "--model", str(path), "--category", "kick", "--morph", *map(str, sources),
                     "--frames", "2", "--steps", "4", *gate, "--out", str(out)]) == 0
        assert given[-1] == applied  # the user's gate, else the model's
        recipes = [json.loads(p.read_text())["recipe"] for p in sorted(out.rglob("dd_*.json"))]
        assert [r["tail_gate_db"] for r in recipes] == [applied, applied]
        # a morph runs unguided DDIM whatever the model recommends, and its recipe says so
        assert {(r["sampler"], r["guidance"], r["sigma_max"]) for r in recipes} == {("v-ddim", 1.0, None)}
