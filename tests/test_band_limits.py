"""The per-category band limits (low cut and high cut): measured from training data, stored in the model, applied by
the finish stage per item, turned off by the caller; the trainer measures them on the data it trains on."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from models.config import ModelConfig
from models.datasets import FinishMeasures, FolderSource, fit_to_model, measure_finish
from models.errors import ConfigError
from models.finish import (
    DC_CUTOFF_HZ,
    HIGH_CUT_MAX_HZ,
    HIGH_CUT_MIN_HZ,
    LOW_CUT_MAX_HZ,
    check_high_cut,
    check_low_cut,
    finish,
    high_cut_of,
    low_cut_of,
    remove_dc,
)
from models.generate import SamplingOptions, generate, morph, variation
from tests.reference_nets import OracleBackend, tiny_config

RATE = 44100


def _band_db(x: np.ndarray, low: float, high: float) -> float:
    """Energy of ``x`` (any shape, last axis time) between ``low`` and ``high`` Hz, in dB."""
    spectrum = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1.0 / RATE)
    return float(10 * np.log10(spectrum[..., (freqs >= low) & (freqs < high)].sum() + 1e-30))


def _hat(rng: np.random.Generator, n: int = 16384, corner: float = 3000.0) -> np.ndarray:
    """A decaying noise burst with (almost) nothing under ``corner``: stereo, float64."""
    noise = remove_dc(rng.standard_normal((2, n)), RATE, corner)
    noise = remove_dc(noise, RATE, corner)  # twice: 24 dB per octave under the corner
    return 0.5 * noise * np.exp(-np.arange(n) / (0.05 * RATE))


def _rumble(n: int = 16384, level: float = 0.02) -> np.ndarray:
    """A 60 Hz hum, the kind of floor a small network leaves under a bright sound."""
    return level * np.stack([np.sin(2 * np.pi * 60 * np.arange(n) / RATE)] * 2)


def _bass(freq: float = 55.0, n: int = 16384) -> np.ndarray:
    """A decaying sine with a few harmonics, nothing above about 1 kHz: stereo, float64."""
    t = np.arange(n) / RATE
    tone = sum(0.5 / k * np.sin(2 * np.pi * k * freq * t) for k in range(1, 6)) * np.exp(-t / 0.2)
    return np.stack([tone, tone])


def _hiss(n: int = 16384, level: float = 0.003) -> np.ndarray:
    """White noise: the kind of floor a small network leaves over a dark sound."""
    return level * np.random.default_rng(9).standard_normal((2, n))


def test_the_low_cut_of_bright_sounds_sits_under_their_lowest_content():
    rng = np.random.default_rng(0)
    hats = [_hat(rng, corner=c) for c in np.linspace(2000, 6000, 40)]
    corner = low_cut_of(hats, RATE)
    assert 200.0 < corner < 2000.0  # below the darkest hat's corner, far above the DC filter
    assert corner == float(round(corner))  # whole Hz
    # sounds with real low end get a corner far under it, where a 12 dB/octave high-pass takes under 0.1 dB
    kicks = [0.8 * np.stack([np.sin(2 * np.pi * f * np.arange(16384) / RATE)] * 2) for f in (45, 55, 60)]
    assert low_cut_of(kicks, RATE) < 45.0 / 3
    assert low_cut_of([np.zeros((2, 1000))], RATE) == 0.0  # silence says nothing
    assert low_cut_of([], RATE) == 0.0
    mono = [h[0] for h in hats]  # [samples] items work too
    assert 200.0 < low_cut_of(mono, RATE) < 2000.0


def test_an_offset_under_an_envelope_does_not_count_as_low_end():
    """An offset under a decay (a pulse wave's, a driven oscillator's) is energy around 0 Hz that the finish
    stage's DC filter takes from every generated sound anyway: it must not hold a category's low cut at 0 (the
    synthesizer's synths have it, and so their category had no low cut and kept the network's rumble, 20 dB
    under the sound below 40 Hz)."""
    t = np.arange(16384) / RATE
    envelope = np.minimum(t / 0.005, 1.0) * np.exp(-t / 0.3)
    notes = []
    for f in np.linspace(130, 260, 20):  # C3 and up, like the synthesizer's synths
        tone = sum(0.5 / k * np.sin(2 * np.pi * k * f * t) for k in range(1, 6))
        notes.append(np.stack([(tone + 0.05) * envelope] * 2))
    power = [np.abs(np.fft.rfft(n[0])) ** 2 for n in notes]
    assert min(p[0] / p.sum() for p in power) > 0.01  # over 1% of each one's energy sits in the 0 Hz bin
    corner = low_cut_of(notes, RATE)
    assert 40.0 < corner < 130.0  # over the rumble, under the lowest note
    assert low_cut_of([n - 0.05 * envelope for n in notes], RATE) == pytest.approx(corner, abs=5)  # as if none


def test_the_high_cut_of_dark_sounds_sits_over_their_highest_content():
    basses = [_bass(f) for f in np.linspace(40, 120, 30)]
    corner = high_cut_of(basses, RATE)
    assert 600.0 < corner < 5000.0  # above the brightest bass's harmonics, far below Nyquist
    assert corner == float(round(corner))
    hats = [_hat(np.random.default_rng(i)) for i in range(5)]  # energy up to Nyquist: nothing to cut
    assert high_cut_of(hats, RATE) == 0.0
    assert high_cut_of([np.zeros((2, 1000))], RATE) == 0.0 and high_cut_of([], RATE) == 0.0
    sines = [0.5 * np.hanning(8192) * np.sin(2 * np.pi * 30 * np.arange(8192) / RATE)]  # never under the minimum
    assert high_cut_of(sines, RATE) == HIGH_CUT_MIN_HZ


def test_the_high_cut_removes_the_hiss_over_a_bass_and_leaves_the_bass():
    bass = _bass()
    plain = finish(bass + _hiss(), RATE)
    cut = finish(bass + _hiss(), RATE, high_cut_hz=1500.0)
    assert _band_db(cut, 8000, 22050) < _band_db(plain, 8000, 22050) - 20.0  # the hiss goes (12 dB per octave)
    assert _band_db(cut, 30, 400) == pytest.approx(_band_db(plain, 30, 400), abs=0.1)  # the bass stays
    np.testing.assert_array_equal(finish(bass, RATE, high_cut_hz=0.0), finish(bass, RATE))  # 0: none
    # a corner the rate cannot hold (a 44.1 kHz model's 20 kHz at 16 kHz) is no low-pass at all
    np.testing.assert_array_equal(finish(bass, 16000, high_cut_hz=20000.0), finish(bass, 16000))


def test_the_low_cut_removes_the_rumble_under_a_hat_and_leaves_the_hat():
    hat = _hat(np.random.default_rng(1))
    plain = finish(hat + _rumble(), RATE)
    cut = finish(hat + _rumble(), RATE, low_cut_hz=800.0)
    assert _band_db(cut, 40, 100) < _band_db(plain, 40, 100) - 40.0  # the hum goes
    assert _band_db(cut, 3000, 20000) == pytest.approx(_band_db(plain, 3000, 20000), abs=0.2)  # the hat stays
    np.testing.assert_array_equal(finish(hat, RATE, low_cut_hz=0.0), finish(hat, RATE))  # 0: only the DC filter
    np.testing.assert_array_equal(finish(hat, RATE, low_cut_hz=DC_CUTOFF_HZ), finish(hat, RATE))


_BAD_CORNERS = [("low", check_low_cut, "10..5000", bad) for bad in (-5, 5, 9.9, LOW_CUT_MAX_HZ + 1, float("nan"), True,
                                                                      "100", None)]
_BAD_CORNERS += [("high", check_high_cut, "500..96000", bad) for bad in (-5, 100, HIGH_CUT_MAX_HZ + 1, float("inf"),
                                                                          False, "8000", None)]


@pytest.mark.parametrize("side, check, allowed, bad", _BAD_CORNERS)
def test_corners_out_of_range_are_refused_by_name(side, check, allowed, bad):
    with pytest.raises(ConfigError, match=rf"{side} cut must be 0 \(none\) or a number of Hz in {allowed}, got"):
        check(bad)
    with pytest.raises(ConfigError, match=f"{side} cut"):
        finish(np.zeros((2, 512)), RATE, **{f"{side}_cut_hz": bad})
    with pytest.raises(ConfigError, match=f"{side} cut"):
        ModelConfig(name="x", categories=("kick",), **{f"{side}_cut_hz": (bad,)})


def test_the_config_holds_one_band_per_category():
    config = ModelConfig(name="x", categories=("kick", "hat"), low_cut_hz=(0, 800), high_cut_hz=(3000, 0))
    assert config.low_cut_hz == (0.0, 800.0) and config.high_cut_hz == (3000.0, 0.0)
    again = ModelConfig.from_json(config.to_json())
    assert again == config and again.band_for("hat") == (800.0, 0.0) and again.band_for("kick") == (0.0, 3000.0)
    assert config.band_for(None) == (0.0, 0.0) and config.band_for("snare") == (0.0, 0.0)
    old = {k: v for k, v in config.to_dict().items() if not k.endswith("_cut_hz")}  # files from before
    assert ModelConfig.from_dict(old).low_cut_hz == () and ModelConfig.from_dict(old).high_cut_hz == ()
    with pytest.raises(ConfigError, match=r"high_cut_hz must be empty or hold one value per category \(2\), got"):
        ModelConfig(name="x", categories=("kick", "hat"), high_cut_hz=(800.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="high_cut_hz"):
        ModelConfig.from_json('{"name": "x", "categories": ["kick"], "high_cut_hz": "loud"}')
    with pytest.raises(ConfigError, match="category 'hat': high_cut_hz 700 must lie above low_cut_hz 800"):
        ModelConfig(name="x", categories=("kick", "hat"), low_cut_hz=(0, 800), high_cut_hz=(3000, 700))
    with pytest.raises(ConfigError, match=r"low_cut_hz must be empty or hold one value per category \(2\), got"):
        ModelConfig(name="x", categories=("kick", "hat"), low_cut_hz=(800.0,))
    with pytest.raises(ConfigError, match="low_cut_hz"):
        ModelConfig(name="x", low_cut_hz=(800.0,))  # an unconditional model has no categories to cut
    with pytest.raises(ConfigError, match="band_limit must be true"):
        SamplingOptions(band_limit="off").resolved(config)
    assert SamplingOptions().resolved(config).band_limit is True
    assert SamplingOptions(band_limit=False).resolved(config).band_limit is False


def test_generation_variation_and_morph_cut_each_item_at_its_categorys_corner():
    sound = 0.2 * (_hat(np.random.default_rng(2)) + _rumble())  # within full scale: no gain change in the finish
    assert np.abs(sound).max() < 0.9
    backend = OracleBackend(sound, sample_rate=RATE, categories=("kick", "hat"), low_cut_hz=(0.0, 800.0),
                            high_cut_hz=(16000.0, 0.0))
    opts = SamplingOptions("dpmpp-2m", steps=4)
    kick, hat = generate(backend, [1, 1], category=["kick", "hat"], options=opts)
    finished = finish(sound, RATE)  # the oracle's sound through the finish stage without a low cut
    assert _band_db(kick, 40, 100) == pytest.approx(_band_db(finished, 40, 100), abs=0.5)  # no low cut for kicks
    assert _band_db(hat, 40, 100) < _band_db(kick, 40, 100) - 40.0
    assert _band_db(hat, 3000, 12000) == pytest.approx(_band_db(finished, 3000, 12000), abs=0.2)
    assert _band_db(kick, 19000, 22050) < _band_db(finished, 19000, 22050) - 3.0  # the kick's high cut
    # the same seed alone gives the same sound as in the mixed batch
    np.testing.assert_allclose(generate(backend, [1], category="hat", options=opts)[0], hat, atol=1e-6)
    off = generate(backend, [1], category="hat", options=replace(opts, band_limit=False))[0]
    np.testing.assert_allclose(off, finished, atol=1e-6)  # turned off: as the network left it
    varied = variation(backend, sound, [4], strength=0.5, category="hat", options=opts)[0]
    assert _band_db(varied, 40, 100) < _band_db(kick, 40, 100) - 40.0
    frames = morph(backend, sound, sound, 2, category="hat", steps=3)
    assert _band_db(frames[0], 40, 100) < _band_db(kick, 40, 100) - 40.0
    kept = morph(backend, sound, sound, 2, category="hat", steps=3, band_limit=False)
    assert _band_db(kept[0], 40, 100) == pytest.approx(_band_db(finished, 40, 100), abs=1.0)


def _folder(root, per: int = 6):
    rng = np.random.default_rng(3)
    for i in range(per):
        (root / "hat").mkdir(parents=True, exist_ok=True)
        (root / "kick").mkdir(parents=True, exist_ok=True)
        sf.write(root / "hat" / f"h{i}.wav", _hat(rng, corner=2500 + 500 * i).T.astype(np.float32), RATE)
        kick = 0.8 * np.sin(2 * np.pi * (50 + 5 * i) * np.arange(16384) / RATE) * np.exp(-np.arange(16384) / 4000)
        sf.write(root / "kick" / f"k{i}.wav", kick.astype(np.float32), RATE)
    return root


def test_the_band_is_measured_on_a_folder_and_kept_for_categories_it_lacks(tmp_path):
    folder = _folder(tmp_path / "data")
    config = tiny_config(sample_rate=RATE, sample_size=16384, categories=("kick", "hat", "fx"),
                         low_cut_hz=(0.0, 0.0, 120.0), high_cut_hz=(0.0, 0.0, 9000.0))
    source = FolderSource(folder, sample_rate=RATE, sample_size=16384)
    fit_to_model(source, config)  # the data's categories map onto the model's: hat, kick -> 1, 0
    measured = measure_finish(source, config)
    (kick, hat, fx), (kick_high, hat_high, fx_high) = measured.low_cut_hz, measured.high_cut_hz
    assert kick < 50.0 / 3 and 200.0 < hat < 2500.0  # far under the lowest kick's 50 Hz
    assert 500.0 <= kick_high < 5000.0 and hat_high == 0.0  # the sines end low, the noise reaches Nyquist
    assert (fx, fx_high) == (120.0, 9000.0)  # no fx in the data: the model's corners stay
    unconditional = FolderSource(folder, sample_rate=RATE, sample_size=16384, unconditional=True)
    plain = replace(config, categories=(), low_cut_hz=(), high_cut_hz=())
    assert measure_finish(unconditional, plain) == FinishMeasures((), (), ())


def test_a_training_run_measures_the_band_of_its_data_and_exports_it(tmp_path, capsys):
    from companion.cli.main import main
    from models.checkpoints import load_weights
    from tests.reference_nets import save_tiny

    folder = _folder(tmp_path / "data")
    init = save_tiny(tmp_path / "init.safetensors", categories=("hat", "kick"), low_cut_hz=(3000.0, 500.0),
                     high_cut_hz=(0.0, 0.0))
    out = tmp_path / "tuned.safetensors"
    assert main(["train", "--data", str(folder), "--init", str(init), "--steps", "1", "--batch-size", "2",
                 "--run-dir", str(tmp_path / "run"), "--export", str(out), "--device", "cpu"]) == 0, capsys.readouterr()
    config = load_weights(out).config
    hat, kick = config.low_cut_hz
    # the parent's 500 Hz made way for what the kicks in this folder need (cropped to 32 ms, their 50-75 Hz
    # spreads down to 0)
    assert kick < 50.0
    assert 10.0 <= hat < 3000.0 and hat != 3000.0
    hat_high, kick_high = config.high_cut_hz
    # at 16 kHz the hats reach Nyquist; the kicks, cropped to 512 samples, end abruptly but still below it
    assert hat_high == 0.0 and 500.0 <= kick_high < 0.45 * 16000
    metadata = json.loads(config.to_json())  # and they travel in the file's metadata
    assert (metadata["low_cut_hz"], metadata["high_cut_hz"]) == ([hat, kick], [hat_high, kick_high])


def test_cli_generate_applies_the_band_unless_told_not_to_and_records_it(tmp_path, capsys):
    from companion.cli.main import main
    from tests.reference_nets import save_tiny

    path = save_tiny(tmp_path / "g.safetensors", low_cut_hz=(0.0, 0.0, 2000.0), high_cut_hz=(0.0, 0.0, 6000.0))
    def run(seed: int, *extra: str) -> tuple[dict, np.ndarray]:
        out = tmp_path / f"out{len(extra)}"
        assert main(["generate", "--model", str(path), "--category", "clap", "--steps", "2", "--sampler",
                     "dpmpp-2m", "--out", str(out), "--count", "1", "--seed", str(seed), *extra]) == 0
        sidecar = next(p for p in out.rglob("dd_*.json") if json.loads(p.read_text())["recipe"]["seed"] == seed)
        audio, _ = sf.read(sidecar.with_suffix(".wav"))
        return json.loads(sidecar.read_text())["recipe"], audio.T

    recipe, cut = run(7)
    assert (recipe["low_cut_hz"], recipe["high_cut_hz"]) == (2000.0, 6000.0)  # the model's corners for claps
    recipe, plain = run(7, "--no-band-limit")
    assert (recipe["low_cut_hz"], recipe["high_cut_hz"]) == (0.0, 0.0)
    low = np.fft.rfftfreq(cut.shape[-1], 1 / 16000) < 500
    assert np.sum(np.abs(np.fft.rfft(cut)[:, low]) ** 2) < 0.01 * np.sum(np.abs(np.fft.rfft(plain)[:, low]) ** 2)
    capsys.readouterr()
