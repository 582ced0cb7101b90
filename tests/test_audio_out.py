"""The audio output on real PortAudio: finite playback into the ALSA ``file`` plugin (bit-exact, no
clock: the stream is closed as soon as the sound is out), and clear errors for missing devices."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.conftest_jack import missing

ASOUND = """</usr/share/alsa/alsa.conf>
pcm.ddraw {
    type file
    slave.pcm "null"
    file { @func getenv vars [ DD_CAPTURE_RAW ] default "/tmp/dd-capture.raw" }
    format "raw"
    truncate true
}
"""


@pytest.fixture(scope="module")
def alsa_capture(tmp_path_factory):
    reason = missing()
    if reason and "jack" not in reason.lower():  # this test needs PortAudio and sounddevice only
        pytest.fail(reason)
    conf = tmp_path_factory.mktemp("alsa") / "asound.conf"
    conf.write_text(ASOUND)
    saved = os.environ.get("ALSA_CONFIG_PATH")
    os.environ["ALSA_CONFIG_PATH"] = str(conf)
    from companion.live import audio_device

    audio_device.rescan_devices()  # PortAudio reads the ALSA configuration when it starts
    yield conf
    if saved is None:
        os.environ.pop("ALSA_CONFIG_PATH", None)
    else:
        os.environ["ALSA_CONFIG_PATH"] = saved
    audio_device.rescan_devices()


def play_and_capture(out, mixer, sound, capture):
    """Play ``sound`` once, let the device run a second past it, close, and read back the capture."""
    mixer.play(sound, 1.0)
    deadline = time.monotonic() + 10
    while (mixer.rendered_frames < len(sound) + 48000 or mixer.active_voices()) and time.monotonic() < deadline:
        time.sleep(0.001)
    out.close()  # never leave a stream open on this clockless device
    return np.fromfile(capture, np.float32).reshape(-1, 2)


def assert_heard_exactly(data, sound):
    start = int(np.flatnonzero(data[:, 0])[0])
    np.testing.assert_array_equal(data[start:start + len(sound)], sound)
    assert not data[start + len(sound):].any()


def test_a_pad_sound_plays_bit_exact_on_the_named_device(alsa_capture, tmp_path, monkeypatch):
    from companion.live.audio_out import AudioOut
    from companion.live.mixer import Mixer

    capture = tmp_path / "capture.raw"
    monkeypatch.setenv("DD_CAPTURE_RAW", str(capture))  # alsa-lib reads it at every open
    out = AudioOut(lambda channels, rate: Mixer(channels, rate), "ddraw", rate=48000)
    mixer = out.open()
    assert out.error is None and "ddraw" in out.describe()
    t = np.arange(4800) / 48000
    sound = np.ascontiguousarray(np.repeat((0.3 * np.cos(2 * np.pi * 440 * t))[:, None], 2, axis=1),
                                 dtype=np.float32)
    assert_heard_exactly(play_and_capture(out, mixer, sound, capture), sound)


def test_a_missing_device_is_a_clear_error_and_audio_stays_off(alsa_capture):
    from companion.live.audio_device import AudioDeviceError
    from companion.live.audio_out import AudioOut
    from companion.live.mixer import Mixer

    states = []
    out = AudioOut(lambda c, r: Mixer(c, r), "Focusrite 18i20", on_state=lambda s, d: states.append(s))
    with pytest.raises(AudioDeviceError, match="'Focusrite 18i20' not found; output devices: .*ddraw"):
        out.open()
    assert not out.running and out.mixer is None and states == ["error"]
    assert "not found" in out.describe()
    out.device_name = "ddraw"
    os.environ.setdefault("DD_CAPTURE_RAW", os.devnull)
    try:
        assert out.reopen() is not None and out.error is None  # re-opens when asked
    finally:
        out.close()


def test_the_audio_process_plays_bit_exact_too(alsa_capture, tmp_path, monkeypatch):
    import functools

    from companion.live.audio_out import AudioOut
    from companion.live.mixer import Mixer

    capture = tmp_path / "capture.raw"
    monkeypatch.setenv("DD_CAPTURE_RAW", str(capture))  # the audio process inherits it
    out = AudioOut(functools.partial(Mixer), "ddraw", rate=48000, process=True)
    mixer = out.open()
    assert out.pid is not None and "ddraw" in out.describe()
    t = np.arange(4800) / 48000
    sound = np.ascontiguousarray(np.stack([0.3 * np.cos(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)],
                                          axis=1), dtype=np.float32)
    assert_heard_exactly(play_and_capture(out, mixer, sound, capture), sound)
