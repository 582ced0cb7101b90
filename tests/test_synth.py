"""The procedural one-shot synthesizer (models/synth.py) and the benchmark features (models/features.py)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from models.errors import ConfigError
from models.features import (
    DESCRIPTORS,
    EMBED_DIM,
    N_MELS,
    CentroidClassifier,
    LogisticClassifier,
    embed,
    frechet_distance,
    mean_pairwise_distance,
    mel_filterbank,
    spectral_centroid,
)
from models.synth import (
    CATEGORIES,
    MIN_LENGTH,
    SynthCorpus,
    category_index,
    example,
    synth_batch,
    synthesize,
    write_corpus,
)

SR = 44100
N = 22050  # half a second keeps the suite fast; the voices do not depend on the length otherwise
SEEDS = range(6)


def _descriptor(feats: np.ndarray, name: str) -> np.ndarray:
    return feats[..., EMBED_DIM - len(DESCRIPTORS) + DESCRIPTORS.index(name)]


@pytest.fixture(scope="module")
def sounds() -> dict[str, np.ndarray]:
    return {c: np.stack([synthesize(c, np.random.default_rng(s), N, SR) for s in SEEDS]) for c in CATEGORIES}


@pytest.fixture(scope="module")
def corpus_feats() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings of a training corpus (50 per category) and a held-out one (10 per category, other seed)."""
    train_x, train_y = SynthCorpus(seed=11, length=N, sample_rate=SR).batch(0, 500)
    test_x, test_y = SynthCorpus(seed=12, length=N, sample_rate=SR).batch(0, 100)
    return embed(train_x, SR), train_y, embed(test_x, SR), test_y


# --- synthesizer ------------------------------------------------------------------------------------------
def test_categories_are_the_documented_ones_in_order():
    assert CATEGORIES == ("kick", "snare", "clap", "closed_hat", "open_hat", "tom", "perc", "bass", "synth", "fx")
    assert [category_index(c) for c in CATEGORIES] == list(range(10))


@pytest.mark.parametrize("category", CATEGORIES)
def test_same_seed_same_sound_other_seed_other_sound(category):
    a = synthesize(category, np.random.default_rng(123), N, SR)
    b = synthesize(category, np.random.default_rng(123), N, SR)
    c = synthesize(category, np.random.default_rng(124), N, SR)
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 0.05
    assert abs(np.corrcoef(a.ravel(), c.ravel())[0, 1]) < 0.95


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_sound_is_a_clean_one_shot(category, sounds):
    for x in sounds[category]:
        assert x.shape == (2, N) and x.dtype == np.float32
        assert np.all(np.isfinite(x))
        peak = float(np.max(np.abs(x)))
        assert -6.05 <= 20 * np.log10(peak) <= -0.95  # peak-normalised, never clipping
        onset = int(np.argmax(np.max(np.abs(x), axis=0) > 0.1 * peak))
        assert onset < 0.005 * SR, f"{category} starts {onset / SR * 1e3:.1f} ms late"
        assert np.sqrt(np.mean(x[:, : SR // 20] ** 2)) > 0.01 * peak  # sound in the first 50 ms
        assert np.max(np.abs(x[:, -1])) < 1e-6  # faded to silence at the end
        assert np.sqrt(np.mean(x[:, -SR // 500 :] ** 2)) < 0.01 * peak


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_is_varied(category, sounds):
    feats = embed(sounds[category], SR)
    assert mean_pairwise_distance(feats) > 3.0
    assert np.std(_descriptor(feats, "centroid_log2hz")) > 0.1  # brightness varies by more than 0.1 octave
    assert np.ptp(20 * np.log10(np.max(np.abs(sounds[category]), axis=(1, 2)))) > 0.5  # and the level too


def test_spectral_character_follows_the_instrument(sounds):
    centroid = {c: float(np.median([spectral_centroid(x, SR) for x in sounds[c]])) for c in CATEGORIES}
    assert centroid["kick"] < centroid["snare"] < centroid["closed_hat"]
    assert centroid["bass"] < centroid["snare"]
    assert centroid["bass"] < min(centroid["closed_hat"], centroid["open_hat"]) / 4
    assert centroid["tom"] < centroid["closed_hat"] / 4
    low = {c: float(np.median(_descriptor(embed(sounds[c], SR), "low_ratio"))) for c in ("kick", "bass", "closed_hat")}
    assert low["kick"] > 0.5 and low["bass"] > 0.5 and low["closed_hat"] < 0.01


def test_hats_are_short_or_long_as_named(sounds):
    closed = np.median(_descriptor(embed(sounds["closed_hat"], SR), "decay20_s"))
    opened = np.median(_descriptor(embed(sounds["open_hat"], SR), "decay20_s"))
    assert closed < 0.12 and opened > 2 * closed


def _low_band_correlation(x: np.ndarray, cutoff: float = 150.0) -> float:
    spec = np.fft.rfft(x.astype(np.float64), axis=-1)
    spec[:, np.fft.rfftfreq(x.shape[-1], 1 / SR) > cutoff] = 0
    left, right = np.fft.irfft(spec, x.shape[-1], axis=-1)
    return float(left @ right / np.sqrt((left @ left) * (right @ right)))


def test_low_end_is_mono_and_hats_are_wide(sounds):
    for category in ("kick", "bass"):
        assert min(_low_band_correlation(x) for x in sounds[category]) > 0.9, category
    assert np.median(_descriptor(embed(sounds["open_hat"], SR), "width")) > 0.05
    assert np.median(_descriptor(embed(sounds["kick"], SR), "width")) < 0.02


@pytest.mark.parametrize("sample_rate", [8000, 22050, 48000])
def test_other_sample_rates_and_the_shortest_length(sample_rate):
    for label, category in enumerate(CATEGORIES):
        for length in (MIN_LENGTH, 768, sample_rate // 4):
            # several seeds: each category picks among kinds of sound (rim, cowbell or shaker...), and a window
            # shorter than a sound's echo or second grain must still render
            for seed in range(12):
                x = synthesize(category, np.random.default_rng([label, seed]), length, sample_rate)
                assert x.shape == (2, length) and np.all(np.isfinite(x)) and np.max(np.abs(x)) < 1.0


def test_batch_corpus_and_example_agree():
    batch = synth_batch(["kick", "fx", "kick"], [5, 6, 5], 4096, SR)
    assert batch.shape == (3, 2, 4096) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], synthesize("kick", np.random.default_rng(5), 4096, SR))
    np.testing.assert_array_equal(batch[0], batch[2])
    audio, labels = SynthCorpus(seed=3, length=4096, sample_rate=SR).batch(10, 12)
    assert labels.tolist() == [i % 10 for i in range(10, 22)]
    for k, i in enumerate(range(10, 22)):
        x, label = example(3, i, 4096, SR)
        assert label == labels[k]
        np.testing.assert_array_equal(x, audio[k])
    assert not np.array_equal(example(3, 10, 4096, SR)[0], example(4, 10, 4096, SR)[0])


def test_write_corpus_layout_and_contents(tmp_path):
    paths = write_corpus(tmp_path / "corpus", per_category=2, length=2048, sample_rate=22050, seed=9)
    assert len(paths) == 20
    for label, category in enumerate(CATEGORIES):
        for j in range(2):
            path = tmp_path / "corpus" / category / f"{category}_{j:04d}.wav"
            assert path in paths
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, 2, 2048, "PCM_24")
            data, _ = sf.read(str(path), dtype="float64")
            expected, got_label = example(9, j * len(CATEGORIES) + label, 2048, 22050)
            assert got_label == label
            np.testing.assert_allclose(data.T, expected, atol=2.0**-22)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: synthesize("cowbell", np.random.default_rng(0), 4096), "kick, snare, clap"),
        (lambda: synthesize("kick", np.random.default_rng(0), 10), ">= 64"),
        (lambda: synthesize("kick", np.random.default_rng(0), 4096, 1000), "8000..192000"),
        (lambda: synthesize("kick", np.random.default_rng(0), 4096.0), "integer"),
        (lambda: synth_batch(["kick"], [1, 2], 4096), "same length"),
        (lambda: example(-1, 0, 4096), "non-negative"),
        (lambda: write_corpus("/nonexistent", 0, 4096), "per_category"),
    ],
)
def test_bad_requests_raise_config_errors_that_say_what_is_allowed(call, needle):
    with pytest.raises(ConfigError, match=needle):
        call()
    if needle.startswith("kick"):
        with pytest.raises(ConfigError) as err:
            call()
        assert all(c in str(err.value) for c in CATEGORIES) and "cowbell" in str(err.value)


# --- features ---------------------------------------------------------------------------------------------
def test_embed_shapes_and_input_checks():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (3, 2, 4096))
    assert embed(x, SR).shape == (3, EMBED_DIM)
    assert embed(x[0], SR).shape == embed(x[0, 0], SR).shape == (EMBED_DIM,)
    np.testing.assert_allclose(embed(x, SR)[1], embed(x[1], SR))
    with pytest.raises(ConfigError, match="batch, channels, samples"):
        embed(np.zeros((1, 1, 1, 4096)), SR)
    with pytest.raises(ConfigError, match="NaN"):
        embed(np.full((2, 4096), np.nan), SR)
    with pytest.raises(ConfigError, match="sample_rate"):
        embed(x, 100)


def test_mel_filterbank_has_no_empty_band_and_unit_area():
    bank = mel_filterbank(SR, 1024)
    assert bank.shape == (N_MELS, 513)
    np.testing.assert_allclose(bank.sum(axis=1), 1.0)
    centres = bank @ np.fft.rfftfreq(1024, 1 / SR)
    assert np.all(np.diff(centres) >= 0) and centres[0] < 100 and centres[-1] > 15000


def test_spectral_centroid_of_pure_tones():
    t = np.arange(SR) / SR
    for f in (200.0, 1000.0, 8000.0):
        assert spectral_centroid(np.sin(2 * np.pi * f * t), SR) == pytest.approx(f, rel=0.05)


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4000, 3)) * [1.0, 2.0, 0.5]
    b = rng.standard_normal((4000, 3)) * [3.0, 2.0, 0.5] + [1.0, 0.0, 0.0]
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 = 1 + 4 = 5
    assert frechet_distance(a, b) == pytest.approx(5.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # rotating both sets together changes nothing
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    assert frechet_distance(a @ q, b @ q) == pytest.approx(frechet_distance(a, b), rel=1e-6)
    with pytest.raises(ConfigError, match="same dimension"):
        frechet_distance(a, b[:, :2])


def test_mean_pairwise_distance_of_a_triangle():
    assert mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])) == pytest.approx(4.0)
    with pytest.raises(ConfigError, match="count >= 2"):
        mean_pairwise_distance(np.zeros((1, 4)))


def test_frechet_separates_real_sounds_from_white_noise(corpus_feats):
    train, _, test, _ = corpus_feats
    noise = embed(np.random.default_rng(2).uniform(-0.5, 0.5, (100, 2, N)), SR)
    assert frechet_distance(train, train) < 1e-6
    real_vs_real = frechet_distance(train[:100], test)  # disjoint seeds, same recipe
    real_vs_noise = frechet_distance(train[:100], noise)
    print(f"\nFrechet distance real-vs-real {real_vs_real:.2f}, real-vs-white-noise {real_vs_noise:.2f}")
    assert real_vs_real * 10 < real_vs_noise


def test_categories_are_recognisable_on_held_out_sounds(corpus_feats):
    train, train_y, test, test_y = corpus_feats
    accuracy = LogisticClassifier().fit(train, train_y).score(test, test_y)
    baseline = CentroidClassifier().fit(train, train_y).score(test, test_y)
    print(f"\nheld-out category accuracy: logistic {accuracy:.3f}, nearest centroid {baseline:.3f}")
    assert accuracy >= 0.9
    assert baseline > 0.5  # even the crude classifier is far above chance (0.1)


def test_classifiers_check_their_inputs():
    with pytest.raises(ConfigError, match="fit"):
        LogisticClassifier().predict(np.zeros((2, 3)))
    clf = CentroidClassifier().fit(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array(["kick", "snare"]))
    assert clf.predict(np.array([[0.9, 1.2]])).tolist() == ["snare"]
    with pytest.raises(ConfigError, match="dimension 2"):
        clf.predict(np.zeros((1, 3)))
    with pytest.raises(ConfigError, match="one per row"):
        CentroidClassifier().fit(np.zeros((3, 2)), np.zeros(2))
