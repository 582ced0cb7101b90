"""The per-category onset fade: measured from training data (how soon its sounds reach half their peak), stored in
the model, applied by the finish stage per item; the trainer measures it on the data it trains on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from models.config import ModelConfig
from models.errors import ConfigError
from models.finish import FADE_IN_MAX_MS, FADE_IN_MIN_MS, check_fade_in, fade_in, fade_in_of, finish
from models.generate import SamplingOptions, generate, variation
from tests.reference_nets import OracleBackend

RATE = 44100


def _pluck(attack_ms: float, freq: float = 220.0, n: int = 16384) -> np.ndarray:
    """A saw-ish note with a linear attack of ``attack_ms``, then a decay: stereo, float64, starts at 0."""
    t = np.arange(n) / RATE
    tone = sum(0.5 / k * np.sin(2 * np.pi * k * freq * t) for k in range(1, 6))
    envelope = np.minimum(t * 1000.0 / attack_ms, 1.0) * np.exp(-t / 0.3)
    return np.stack([tone * envelope] * 2)


def _hit(n: int = 16384, seed: int = 0) -> np.ndarray:
    """A noise burst at its loudest in the first sample, like a hi-hat or a snare."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, n)) * np.exp(-np.arange(n) / (0.03 * RATE))
    x[:, 0] = np.abs(x).max() * 1.01
    return 0.5 * x / np.abs(x).max()


def test_the_onset_fade_of_soft_attacks_is_their_quickest_rise_and_drums_get_none():
    plucks = [_pluck(ms, freq=2000.0) for ms in np.linspace(2.0, 10.0, 41)]  # 0.2 ms apart
    ms = fade_in_of(plucks, RATE)
    # each reaches half its peak about half-way through its attack (within a period, 0.5 ms); 5% of them are the 2
    # and 2.2 ms ones
    assert 0.8 < ms < 1.6
    assert ms == round(ms, 2)
    assert fade_in_of([_hit(seed=i) for i in range(10)], RATE) == 0.0  # at the peak from the first sample
    mixed = [_hit(seed=i) for i in range(4)] + plucks  # 4 of 44 hits start at once: over 5%, so no fade
    assert fade_in_of(mixed, RATE) == 0.0
    assert fade_in_of([np.zeros((2, 1000))], RATE) == 0.0 and fade_in_of([], RATE) == 0.0  # nothing to say
    assert fade_in_of([p[0] for p in plucks], RATE) == ms  # [samples] items work too
    swell = np.sin(2 * np.pi * 220 * np.arange(RATE) / RATE) * np.linspace(0.0, 1.0, RATE)  # half-way at 0.5 s
    slow = [np.stack([swell, swell])]  # capped at the longest fade there is
    assert fade_in_of(slow, RATE) == FADE_IN_MAX_MS


def test_the_fade_takes_the_step_from_silence_and_nothing_after_it():
    step = 0.8 * np.stack([np.cos(2 * np.pi * 220 * np.arange(4096) / RATE)] * 2)  # starts at 0.8: a click
    out = fade_in(step, RATE, 0.5)
    n = int(round(0.5 * RATE / 1000))
    assert np.all(out[:, 0] == 0.0)
    gain = out[0, :n] / step[0, :n]  # (the cosine stays over 0.7 in the first half millisecond)
    assert gain[0] == 0.0 and np.all(np.diff(gain) > 0.0) and gain[-1] < 1.0  # rises from silence, never boosts
    np.testing.assert_array_equal(out[:, n:], step[:, n:])
    assert np.abs(np.diff(out[0])).max() < 0.1  # no sample-to-sample jump left (the step was 0.8)
    np.testing.assert_array_equal(fade_in(step, RATE, 0.0), step)  # 0: none
    # through the finish stage: the same sound as without the fade, but for its first half millisecond
    plain, faded = finish(step, RATE), finish(step, RATE, fade_in_ms=0.5)
    assert abs(plain[0, 0]) > 0.5 and faded[0, 0] == 0.0
    np.testing.assert_array_equal(faded[:, n:], plain[:, n:])


@pytest.mark.parametrize("value", [0.05, FADE_IN_MAX_MS + 1, -1.0, float("nan"), "soft", True, None])
def test_a_bad_onset_fade_is_refused_by_name(value):
    with pytest.raises(ConfigError, match=rf"onset fade must be 0 \(none\) or a number of milliseconds in "
                                          rf"{FADE_IN_MIN_MS:g}..{FADE_IN_MAX_MS:g}, got"):
        check_fade_in(value)
    with pytest.raises(ConfigError, match="onset fade"):
        finish(np.zeros((2, 4096)), RATE, fade_in_ms=value)


def test_the_config_carries_one_fade_per_category_and_reads_files_from_before():
    config = ModelConfig(name="x", categories=("kick", "pad"), fade_in_ms=(0.0, 2.5))
    assert config.fade_in_for("pad") == 2.5 and config.fade_in_for("kick") == 0.0
    assert config.fade_in_for(None) == 0.0 and config.fade_in_for("snare") == 0.0
    again = ModelConfig.from_json(config.to_json())
    assert again == config and json.loads(config.to_json())["fade_in_ms"] == [0.0, 2.5]
    old = {k: v for k, v in config.to_dict().items() if k != "fade_in_ms"}  # files from before
    assert ModelConfig.from_dict(old).fade_in_ms == () and ModelConfig.from_dict(old).fade_in_for("pad") == 0.0
    with pytest.raises(ConfigError, match=r"fade_in_ms must be empty or hold one value per category \(2\), got"):
        ModelConfig(name="x", categories=("kick", "pad"), fade_in_ms=(1.0,))
    with pytest.raises(ConfigError, match="onset fade"):
        ModelConfig.from_json('{"name": "x", "categories": ["kick"], "fade_in_ms": [500]}')


def test_generation_fades_in_each_item_by_its_category():
    sound = 0.5 * np.stack([np.cos(2 * np.pi * 220 * np.arange(8192) / RATE)] * 2)  # starts at its peak
    backend = OracleBackend(sound, sample_rate=RATE, categories=("kick", "pad"), fade_in_ms=(0.0, 1.0))
    opts = SamplingOptions("dpmpp-2m", steps=4)
    kick, pad = generate(backend, [1, 1], category=["kick", "pad"], options=opts)
    n = int(round(1.0 * RATE / 1000))
    assert abs(kick[0, 0]) > 0.4  # the kick keeps its step (its data had them)
    assert pad[0, 0] == 0.0 and np.abs(pad[:, :n // 4]).max() < 0.1
    np.testing.assert_allclose(pad[:, n:], kick[:, n:], atol=1e-6)  # the rest is the same sound
    # the same seed alone gives the same sound as in the mixed batch
    np.testing.assert_allclose(generate(backend, [1], category="pad", options=opts)[0], pad, atol=1e-6)
    varied = variation(backend, sound, [4], strength=0.5, category="pad", options=opts)[0]
    assert varied[0, 0] == 0.0


def _folder(root, per: int = 8):
    for i in range(per):
        (root / "hat").mkdir(parents=True, exist_ok=True)
        (root / "pad").mkdir(parents=True, exist_ok=True)
        sf.write(root / "hat" / f"h{i}.wav", _hit(seed=i).T.astype(np.float32), RATE)
        sf.write(root / "pad" / f"p{i}.wav", _pluck(8.0 + 2 * i).T.astype(np.float32), RATE)
    return root


def test_a_training_run_measures_the_onsets_of_its_data_and_exports_them(tmp_path, capsys):
    from companion.cli.main import main
    from models.checkpoints import load_weights
    from tests.reference_nets import save_tiny

    folder = _folder(tmp_path / "data")
    init = save_tiny(tmp_path / "init.safetensors", categories=("hat", "pad"), fade_in_ms=(3.0, 0.0))
    out = tmp_path / "tuned.safetensors"
    assert main(["train", "--data", str(folder), "--init", str(init), "--steps", "1", "--batch-size", "2",
                 "--run-dir", str(tmp_path / "run"), "--export", str(out), "--device", "cpu"]) == 0, capsys.readouterr()
    config = load_weights(out).config
    hat, pad = config.fade_in_ms
    assert hat == 0.0  # the parent's 3 ms made way for these hats, which start at their peak
    assert 2.0 < pad < 8.0  # the slowest attacks (8-22 ms) reach half their peak after 4 ms or more
    assert json.loads(config.to_json())["fade_in_ms"] == [hat, pad]  # and they travel in the file's metadata


def test_loops_get_no_onset_fade(tmp_path):
    """A loop model's windows start anywhere; where a file is no longer than the window they start where it does,
    and a soft start there is the loop's seam, not an onset to fade in."""
    from models.datasets import FolderSource, fit_to_model, measure_finish
    from tests.reference_nets import tiny_config

    for i in range(8):  # files exactly one window long, with a soft start
        (tmp_path / "pad").mkdir(exist_ok=True)
        sf.write(tmp_path / "pad" / f"p{i}.wav", _pluck(8.0 + 2 * i, n=4096).T.astype(np.float32), RATE)
    config = tiny_config(sample_rate=RATE, sample_size=4096, categories=("pad",))
    one_shots = FolderSource(tmp_path, sample_rate=RATE, sample_size=4096)
    fit_to_model(one_shots, config)
    assert measure_finish(one_shots, config).fade_in_ms[0] > 2.0  # as one-shots: their onsets
    loops = FolderSource(tmp_path, sample_rate=RATE, sample_size=4096, random_crop=True)
    fit_to_model(loops, config)
    assert measure_finish(loops, config).fade_in_ms == (0.0,)  # as loops: none
