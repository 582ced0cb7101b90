"""Data sources for training: folders, NSynth, the synthesizer; their errors and augmentation."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf

from models.datasets import (
    DatasetError,
    FolderSource,
    NSynthSource,
    SynthSource,
    augment,
    fit_to_model,
    item_rng,
    make_batch,
    open_source,
)
from models.errors import ConfigError
from models.synth import CATEGORIES
from tests.reference_nets import tiny_config

RATE, SIZE = 16000, 768


def tone(n: int, freq: float = 440.0, rate: int = RATE, channels: int = 1) -> np.ndarray:
    x = 0.5 * np.sin(2 * np.pi * freq * np.arange(n) / rate).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write(path, audio, rate=RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate)
    return path


@pytest.fixture
def two_categories(tmp_path):
    root = tmp_path / "samples"
    write(root / "kick" / "k1.wav", tone(2000, 60))
    write(root / "kick" / "sub" / "k2.flac", tone(300, 80))  # nested, short: zero-padded
    write(root / "snare" / "s1.wav", tone(1000, 200, rate=8000, channels=2))  # other rate, stereo
    (root / "snare" / "notes.txt").write_text("not audio")
    return root


def test_folder_categories_resampling_and_padding(two_categories):
    src = FolderSource(two_categories, sample_rate=RATE, sample_size=SIZE)
    assert src.categories == ("kick", "snare")
    assert len(src) == 3
    items = [src.item(i) for i in range(3)]
    assert {label for _, label in items} == {0, 1}
    for audio, _ in items:
        assert audio.shape == (2, SIZE) and audio.dtype == np.float32
    by_name = {p.name: (p, label) for p, label in src.files}
    assert by_name["s1.wav"][1] == 1 and by_name["k2.flac"][1] == 0
    # the short file is zero-padded at the end, mono duplicated to both channels
    idx = next(i for i in range(3) if np.allclose(src.item(i)[0][:, 300:], 0))
    short = src.item(idx)[0]
    assert np.abs(short[:, :300]).max() > 0.1 and np.array_equal(short[0], short[1])
    # the 8 kHz file was resampled: 1000 samples at 8 kHz fill 2000 at 16 kHz, so the window is full
    snare = next(src.item(i)[0] for i in range(3) if src.item(i)[1] == 1)
    assert np.abs(snare[:, SIZE - 10:]).max() > 0.1


def test_one_shots_crop_from_start_and_loops_randomly(tmp_path):
    ramp = np.linspace(-1, 1, 5000, dtype=np.float32)
    write(tmp_path / "loops" / "ramp.wav", ramp, rate=RATE)
    start = FolderSource(tmp_path / "loops", sample_rate=RATE, sample_size=SIZE)
    np.testing.assert_allclose(start.item(0)[0][0], ramp[:SIZE], atol=1e-4)
    rand = FolderSource(tmp_path / "loops", sample_rate=RATE, sample_size=SIZE, random_crop=True, seed=3)
    firsts = {float(rand.item(i)[0][0, 0]) for i in range(8)}
    assert len(firsts) > 4  # different windows
    again = FolderSource(tmp_path / "loops", sample_rate=RATE, sample_size=SIZE, random_crop=True, seed=3)
    assert np.array_equal(rand.item(5)[0], again.item(5)[0])  # a pure function of (seed, index)


def test_top_level_files_are_unconditional(tmp_path):
    write(tmp_path / "a.wav", tone(1000))
    write(tmp_path / "b.wav", tone(1000, 300))
    src = FolderSource(tmp_path, sample_rate=RATE, sample_size=SIZE)
    assert src.categories == () and src.item(0)[1] is None


def test_unconditional_flag_ignores_subfolders(two_categories):
    src = FolderSource(two_categories, sample_rate=RATE, sample_size=SIZE, unconditional=True)
    assert src.categories == () and len(src) == 3 and src.item(1)[1] is None


def test_epochs_visit_every_file_once(two_categories):
    src = FolderSource(two_categories, sample_rate=RATE, sample_size=SIZE, seed=1)
    for epoch in range(3):
        order = src._epoch_order(epoch)
        assert sorted(order.tolist()) == [0, 1, 2]


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="is empty"):
        FolderSource(tmp_path, sample_rate=RATE, sample_size=SIZE)


def test_folder_without_audio(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match="none with an audio suffix"):
        FolderSource(tmp_path, sample_rate=RATE, sample_size=SIZE)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        FolderSource(tmp_path / "nope", sample_rate=RATE, sample_size=SIZE)


def test_only_unreadable_files(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(DatasetError, match="none of the 1 audio files could be read.*broken.wav"):
        FolderSource(tmp_path, sample_rate=RATE, sample_size=SIZE)


def test_unreadable_files_skipped_with_warning_or_refused(tmp_path, caplog):
    write(tmp_path / "good.wav", tone(1000))
    (tmp_path / "bad.wav").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="dd.datasets"):
        src = FolderSource(tmp_path, sample_rate=RATE, sample_size=SIZE)
    assert len(src) == 1 and [p.name for p, _ in src.skipped] == ["bad.wav"]
    assert "bad.wav" in caplog.text
    with pytest.raises(DatasetError, match="unreadable training file .*bad.wav"):
        FolderSource(tmp_path, sample_rate=RATE, sample_size=SIZE, skip_bad=False)


def test_category_with_no_files(two_categories):
    (two_categories / "clap").mkdir()
    (two_categories / "clap" / "info.txt").write_text("empty")
    with pytest.raises(DatasetError, match=r"\['clap'\].*no audio files"):
        FolderSource(two_categories, sample_rate=RATE, sample_size=SIZE)


def test_category_whose_files_are_all_unreadable(two_categories):
    (two_categories / "clap").mkdir()
    (two_categories / "clap" / "c.wav").write_bytes(b"nope")
    with pytest.raises(DatasetError, match=r"\['clap'\] have no readable audio"):
        FolderSource(two_categories, sample_rate=RATE, sample_size=SIZE)


def test_top_level_files_next_to_categories(two_categories):
    write(two_categories / "stray.wav", tone(500))
    with pytest.raises(DatasetError, match="stray.wav.*--unconditional"):
        FolderSource(two_categories, sample_rate=RATE, sample_size=SIZE)


def make_nsynth(root, notes):
    meta = {}
    for name, family in notes:
        meta[name] = {"instrument_family_str": family, "pitch": 60}
        write(root / "audio" / f"{name}.wav", tone(4000, 100 + len(meta) * 50))
    (root / "examples.json").write_text(json.dumps(meta))
    return root


def test_nsynth_layout(tmp_path):
    root = make_nsynth(tmp_path / "nsynth", [("bass_synthetic_001-060-100", "bass"),
                                             ("guitar_acoustic_002-061-100", "guitar"),
                                             ("bass_electronic_003-062-100", "bass")])
    src = NSynthSource(root, sample_rate=RATE, sample_size=SIZE)
    assert src.categories == ("bass", "guitar") and len(src) == 3
    labels = sorted(src.item(i)[1] for i in range(3))
    assert labels == [0, 0, 1]
    assert src.item(0)[0].shape == (2, SIZE)


def test_nsynth_errors(tmp_path):
    with pytest.raises(DatasetError, match="no examples.json"):
        NSynthSource(tmp_path, sample_rate=RATE, sample_size=SIZE)
    root = make_nsynth(tmp_path / "n", [("a-1", "bass")])
    meta = json.loads((root / "examples.json").read_text())
    meta["b-2"] = {"instrument_family_str": "keyboard"}
    (root / "examples.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="no audio file.*b-2.wav"):
        NSynthSource(root, sample_rate=RATE, sample_size=SIZE, skip_bad=False)
    src = NSynthSource(root, sample_rate=RATE, sample_size=SIZE)  # skipped with a warning
    assert src.categories == ("bass",)
    meta["c-3"] = {"pitch": 1}
    (root / "examples.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="c-3.*instrument_family_str"):
        NSynthSource(root, sample_rate=RATE, sample_size=SIZE)


def test_synth_source_is_balanced_and_deterministic():
    src = SynthSource(sample_rate=RATE, sample_size=SIZE, seed=5)
    labels = [src.item(i)[1] for i in range(20)]
    assert labels == [i % len(CATEGORIES) for i in range(20)]
    assert np.array_equal(src.item(7)[0], SynthSource(sample_rate=RATE, sample_size=SIZE, seed=5).item(7)[0])
    assert not np.array_equal(src.item(7)[0], SynthSource(sample_rate=RATE, sample_size=SIZE, seed=6).item(7)[0])
    assert SynthSource(sample_rate=RATE, sample_size=SIZE, unconditional=True).item(0)[1] is None


def test_open_source_errors():
    with pytest.raises(ConfigError, match="kind must be one of"):
        open_source("zip", sample_rate=RATE, sample_size=SIZE)
    with pytest.raises(ConfigError, match="needs a path"):
        open_source("folder", sample_rate=RATE, sample_size=SIZE)
    with pytest.raises(ConfigError, match="random_crop"):
        open_source("synth", sample_rate=RATE, sample_size=SIZE, random_crop=True)


def test_phase_flip_and_gain():
    x = np.full((2, 100), 0.5, dtype=np.float32)
    signs = [float(np.sign(augment(x, item_rng(0, i))[0, 0])) for i in range(400)]
    assert 150 < signs.count(-1.0) < 250  # p = 0.5
    assert {abs(augment(x, item_rng(0, i))[0, 0]) for i in range(20)} == {0.5}  # nothing else by default
    gains = [abs(float(augment(x, item_rng(1, i), gain_db=3.0)[0, 0])) for i in range(50)]
    assert min(gains) >= 0.5 * 10 ** (-3 / 20) - 1e-6 and max(gains) <= 0.5 * 10 ** (3 / 20) + 1e-6
    assert len(set(gains)) > 10
    loud = np.full((2, 10), 3.0, dtype=np.float32)
    assert np.abs(augment(loud, item_rng(0, 0))).max() == 1.0  # upstream clamp


def test_make_batch_is_a_function_of_the_index():
    src = SynthSource(sample_rate=RATE, sample_size=SIZE)
    a, la = make_batch(src, 4, 3)
    b, lb = make_batch(src, 4, 3)
    assert a.shape == (3, 2, SIZE) and np.array_equal(a, b) and la.tolist() == [4, 5, 6]
    c, _ = make_batch(src, 5, 2)
    assert np.array_equal(a[1:], c)


def test_fit_to_model_categories(two_categories):
    src = FolderSource(two_categories, sample_rate=RATE, sample_size=SIZE)
    fit_to_model(src, tiny_config(categories=("Snare", "clap", "kick")))  # a subset, any order, any case
    assert src.item(0)[1] in (0, 2) and src.label_map == {0: 2, 1: 0}
    with pytest.raises(DatasetError, match=r"\['kick', 'snare'\].*\['hat', 'clap'\]"):
        fit_to_model(src, tiny_config(categories=("hat", "clap")))
    with pytest.raises(DatasetError, match="is unconditional but the data has categories"):
        fit_to_model(src, tiny_config())
    fit_to_model(src, tiny_config(), unconditional=True)
    assert src.item(0)[1] is None
    with pytest.raises(DatasetError, match="44100 Hz"):
        fit_to_model(src, tiny_config(sample_rate=44100))


def test_unconditional_data_into_conditional_model(tmp_path):
    write(tmp_path / "a.wav", tone(1000))
    src = FolderSource(tmp_path, sample_rate=RATE, sample_size=SIZE)
    with pytest.raises(DatasetError, match="has categories.*the data has none"):
        fit_to_model(src, tiny_config(categories=("kick",)))
