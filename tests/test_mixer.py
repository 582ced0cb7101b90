"""The voice mixer, driven directly (no device): mixing, gain, polyphony and stealing, chokes, limiter."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from companion.live.mixer import Mixer, MixerError, group_mask

RATE = 48000


def tone(n=4800, freq=440.0, amp=0.25, channels=2):
    t = np.arange(n) / RATE
    mono = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.ascontiguousarray(np.repeat(mono[:, None], channels, axis=1))


def dc(n=4800, amp=0.1, channels=2):
    return np.full((n, channels), amp, np.float32)


def run(mixer, frames, block=256):
    out = np.zeros((frames, mixer.channels), np.float32)
    for start in range(0, frames, block):
        mixer.render(out[start:start + block])
    return out


def test_a_voice_plays_its_buffer_exactly_then_silence():
    mixer = Mixer(rate=RATE)
    buffer = tone(1000)
    assert mixer.play(buffer, 1.0)
    out = run(mixer, 2048)
    np.testing.assert_allclose(out[:1000], buffer, atol=1e-7)
    assert not out[1000:].any()
    assert mixer.active_voices() == 0


def test_gain_scales_and_voices_add_up():
    mixer = Mixer(rate=RATE)
    a, b = dc(512, 0.1), dc(512, 0.2)
    mixer.play(a, 0.5)
    mixer.play(b, 1.0)
    out = run(mixer, 512)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_master_gain_applies_from_the_next_block():
    mixer = Mixer(rate=RATE)
    mixer.set_master_gain(0.5)
    mixer.play(dc(256, 0.4), 1.0)
    np.testing.assert_allclose(run(mixer, 256), 0.2, atol=1e-6)


def test_polyphony_32_then_the_oldest_is_stolen_with_a_fade():
    mixer = Mixer(rate=RATE, polyphony=32, fade_ms=2.0)
    long = [dc(RATE, 0.01) for _ in range(33)]
    for buffer in long[:32]:
        mixer.play(buffer, 1.0)
    out = run(mixer, 256)
    np.testing.assert_allclose(out, 0.32, atol=1e-5)  # 32 voices sound together
    mixer.play(long[32], 1.0)
    out = run(mixer, 256)
    fade = mixer.fade_frames  # 96 frames
    # the stolen voice ramps down (no click): the first sample still has it, then it falls smoothly
    assert out[0, 0] == pytest.approx(0.33, abs=1e-4)
    steps = np.diff(out[:fade + 1, 0])
    assert (steps <= 1e-7).all() and np.abs(steps).max() < 0.01 / fade * 1.5
    np.testing.assert_allclose(out[fade + 1:], 0.32, atol=1e-5)
    assert mixer.active_voices() == 32


def test_a_closed_hat_chokes_the_open_hat_with_a_short_fade():
    mixer = Mixer(rate=RATE, fade_ms=1.0)
    open_hat, closed_hat, kick = dc(RATE, 0.1), dc(64, 0.0), dc(RATE, 0.05)
    mixer.play(open_hat, 1.0, group=1)
    mixer.play(kick, 1.0)
    run(mixer, 512)
    mixer.play(closed_hat, 1.0, cuts=group_mask([1]))
    out = run(mixer, 512)
    fade = mixer.fade_frames
    assert 0.1 < out[0, 0] <= 0.15 + 1e-6
    np.testing.assert_allclose(out[fade + 1:], 0.05, atol=1e-6)  # the kick, in no group, goes on
    assert mixer.active_voices() == 1


def test_stop_all_fades_everything():
    mixer = Mixer(rate=RATE)
    for _ in range(5):
        mixer.play(dc(RATE, 0.1), 1.0)
    run(mixer, 256)
    mixer.stop_all()
    out = run(mixer, 1024)
    assert not out[mixer.fade_frames + 1:].any()


def test_the_soft_limiter_keeps_peaks_below_full_scale_and_quiet_audio_untouched():
    mixer = Mixer(rate=RATE, limit_threshold=0.8)
    loud = tone(4800, amp=0.9)
    for _ in range(4):
        mixer.play(loud, 1.0)  # peaks of 3.6 before the limiter
    out = run(mixer, 4800)
    assert np.abs(out).max() <= 1.0  # never past full scale (tanh reaches 1.0 in float32 at 4x over)
    assert np.abs(out).max() > 0.95
    assert mixer.limited_blocks > 0
    quiet = tone(4800, amp=0.5)
    mixer2 = Mixer(rate=RATE)
    mixer2.play(quiet, 1.0)
    np.testing.assert_array_equal(run(mixer2, 4800), quiet)


def test_callback_sized_blocks_larger_than_the_scratch_are_split():
    mixer = Mixer(rate=RATE, max_block=64)
    buffer = tone(1000)
    mixer.play(buffer, 1.0)
    out = run(mixer, 1000, block=1000)
    np.testing.assert_allclose(out, buffer, atol=1e-7)


def test_a_full_command_ring_drops_and_counts_instead_of_blocking():
    mixer = Mixer(rate=RATE, ring_size=8)
    buffer = dc(64)
    results = [mixer.play(buffer, 1.0) for _ in range(10)]
    assert results == [True] * 8 + [False] * 2
    assert mixer.dropped == 2
    run(mixer, 64)
    assert mixer.play(buffer, 1.0)


def test_the_bank_frees_buffers_only_when_unused_so_the_callback_never_frees():
    mixer = Mixer(rate=RATE)
    sounding = dc(RATE)
    mixer.play(sounding, 1.0)
    run(mixer, 256)
    for _ in range(200):  # many short buffers that end at once
        mixer.play(dc(8), 1.0)
        run(mixer, 64)
    assert any(b is sounding for b in mixer._bank)  # still playing: still pinned
    assert sum(b is not None for b in mixer._bank) < 64  # the finished ones were released


def test_render_makes_no_new_arrays():
    mixer = Mixer(rate=RATE, fade_ms=1.0)
    buffers = [tone(RATE // 4, amp=0.5) for _ in range(8)]
    out = np.zeros((256, 2), np.float32)
    for i, b in enumerate(buffers):
        mixer.play(b, 1.0, group=1 if i % 2 else 0, cuts=group_mask([1]) if i == 7 else 0)
    mixer.render(out)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(50):
        mixer.render(out)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if "mixer" in str(s.traceback))
    assert grown < 1024  # no buffers: at most a few small Python objects


def test_a_producer_thread_and_a_callback_thread_agree():
    mixer = Mixer(rate=RATE, ring_size=64)
    buffer = dc(32, 0.001)
    sent = []
    stop = threading.Event()

    def produce():
        for _ in range(2000):
            while not mixer.play(buffer, 1.0):
                pass
            sent.append(1)
        stop.set()

    thread = threading.Thread(target=produce)
    thread.start()
    out = np.zeros((64, 2), np.float32)
    while not stop.is_set() or mixer._read < mixer._write:
        mixer.render(out)
    thread.join()
    assert mixer._read == mixer._write == 2000 == len(sent)


@pytest.mark.parametrize("bad", [np.zeros((10, 2)), np.zeros((10, 1), np.float32), np.zeros((2, 10), np.float32).T])
def test_bad_buffers_are_refused_naming_what_is_allowed(bad):
    with pytest.raises(MixerError, match="float32"):
        Mixer(rate=RATE).play(bad, 1.0)


def test_bad_gain_and_group_are_refused():
    mixer = Mixer(rate=RATE)
    with pytest.raises(MixerError, match="0..4"):
        mixer.play(dc(), 9.0)
    with pytest.raises(MixerError, match="0..31"):
        mixer.play(dc(), 1.0, group=40)
    with pytest.raises(MixerError, match="polyphony"):
        Mixer(polyphony=0)


def test_load_checks_a_buffer_without_playing_it():
    mixer = Mixer(rate=RATE)
    assert mixer.load(dc(64))
    assert not run(mixer, 64).any() and mixer.active_voices() == 0
    with pytest.raises(MixerError, match=r"float32 \[frames, 2\]"):
        mixer.load(np.zeros((10, 1), np.float32))
