"""The VST3 plugin in a real host (pedalboard) against a real ``dd-companion serve`` on a loopback port.

Each test loads a fresh instance, renders silent blocks while its stock fills in wall time, then hits notes
at known frames and checks the output sample by sample against the WAV files the companion wrote.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from tests.plugin_host import (
    RATE,
    Companion,
    current,
    dpf_state,
    gain,
    has_stock,
    load_vst3,
    read_wav,
    render,
    set_state,
    status_line,
    stocked,
    wait_until,
)

FADE = int(RATE * 5 / 1000)  # the stolen / choked voice's fade


@pytest.fixture(scope="module")
def companion(tmp_path_factory):
    server = Companion(tmp_path_factory.mktemp("plugin") / "out")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plugin(companion):
    """One instance shared by the tests (pedalboard needs ~17 s to load one); each leaves it in new mode."""
    return instance(companion.port)


@pytest.fixture(scope="module")
def other(companion):
    """A second instance: the project re-opened, a second track."""
    return instance(_free_port())


def instance(port: int, stock: int = 1, notes: str = "36 38 42 46"):
    """A new instance that looks for the companion at ``port`` and stocks ``notes`` (a new instance's
    defaults come from DD_COMPANION_PORT and DD_COMPANION_NOTES; a restored project's state overrides them)."""
    os.environ.update(DD_COMPANION_PORT=str(port), DD_COMPANION_NOTES=notes)
    try:
        plugin = load_vst3()
    finally:
        del os.environ["DD_COMPANION_PORT"], os.environ["DD_COMPANION_NOTES"]
    plugin.stock_per_pad = stock
    return plugin


def plays_now(plugin, note: int, path: str) -> None:
    """The pad's recorded sound becomes ``path`` (the worker hears of a hit a few ms after the block)."""
    wait_until(plugin, lambda p: current(p).get(note, ("",))[0] == path, timeout=5)


def assert_plays(out: np.ndarray, frame: int, path: str, velocity: int) -> int:
    """``out`` holds, from ``frame`` on, the file at the velocity's gain; returns the file's length."""
    wav = read_wav(path)
    n = wav.shape[1]
    assert out.shape[1] >= frame + n, "render long enough to hold the whole sound"
    np.testing.assert_allclose(out[:, frame:frame + n], wav * gain(velocity), rtol=0, atol=1e-6)
    return n


def test_a_hit_plays_the_stocked_file_from_the_exact_frame(companion, plugin):
    wait_until(plugin, has_stock(36))
    path = stocked(plugin)[36][0]
    assert Path(path).parent.parent == companion.folder and Path(path).is_file()
    out = render(plugin, 0.5, [(1000, 36, 100)])  # frame 1000 = offset 488 in the host's second block
    assert not out[:, :1000].any(), "nothing before the note's frame"
    n = assert_plays(out, 1000, path, 100)
    assert np.abs(out[:, 1000:1000 + n]).max() > 0.01
    assert not out[:, 1000 + n:].any(), "a one-shot ends with its file"
    plays_now(plugin, 36, path)  # the state records the sound the pad plays now


def test_new_mode_plays_a_different_file_on_every_hit(plugin):
    wait_until(plugin, has_stock(38))
    first = stocked(plugin)[38][0]
    assert_plays(render(plugin, 0.5, [(700, 38, 127)]), 700, first, 127)
    wait_until(plugin, lambda p: stocked(p).get(38, [first])[0] != first)  # refilled with a fresh sound
    second = stocked(plugin)[38][0]
    assert second != first
    out = render(plugin, 0.5, [(300, 38, 64)])
    assert not out[:, :300].any()
    assert_plays(out, 300, second, 64)
    plays_now(plugin, 38, second)


def test_keep_mode_keeps_the_sound_until_regenerate_by_parameter_or_cc(plugin):
    plugin.behaviour = "keep"
    wait_until(plugin, has_stock(36))
    kept = current(plugin)[36][0]  # what the pad played last (an earlier test hit it): kept, the stock waits
    assert kept not in stocked(plugin)[36]
    assert_plays(render(plugin, 0.5, [(100, 36, 127)]), 100, kept, 127)
    assert_plays(render(plugin, 0.5, [(200, 36, 90)]), 200, kept, 90)  # the same sound again
    wait_until(plugin, lambda p: stocked(p).get(36, [kept])[0] != kept)  # a fresh one in stock
    fresh = stocked(plugin)[36][0]
    plugin.regenerate = True  # automation of the Regenerate parameter: the last pad takes its next sound
    render(plugin, 0.05)
    plugin.regenerate = False
    assert fresh != kept
    plays_now(plugin, 36, fresh)
    assert_plays(render(plugin, 0.5, [(50, 36, 127)]), 50, fresh, 127)
    wait_until(plugin, lambda p: stocked(p).get(36, [fresh])[0] != fresh)
    third = stocked(plugin)[36][0]
    cc = mido.Message("control_change", control=102, value=127, time=10 / RATE)  # the companion's regenerate CC
    render(plugin, 0.05, [cc])
    render(plugin, 0.05, [mido.Message("control_change", control=102, value=0, time=0)])
    assert third not in (kept, fresh)
    plays_now(plugin, 36, third)
    assert_plays(render(plugin, 0.5, [(0, 36, 127)]), 0, third, 127)
    plugin.behaviour = "new on every hit"
    render(plugin, 0.05)


def test_the_closed_hat_chokes_the_open_hat(plugin):
    wait_until(plugin, has_stock(42, 46))
    open_hat, closed_hat = stocked(plugin)[46][0], stocked(plugin)[42][0]
    out = render(plugin, 0.6, [(1000, 46, 127), (3000, 42, 127)])
    oh, ch = read_wav(open_hat), read_wav(closed_hat)
    np.testing.assert_allclose(out[:, 1000:3000], oh[:, :2000], rtol=0, atol=1e-6)
    ramp = (np.arange(FADE, 0, -1, dtype=np.float32) / np.float32(FADE))  # the open hat fades out in 5 ms
    np.testing.assert_allclose(out[:, 3000:3000 + FADE], ch[:, :FADE] + oh[:, 2000:2000 + FADE] * ramp, rtol=0, atol=1e-6)
    n = ch.shape[1]
    np.testing.assert_allclose(out[:, 3000 + FADE:3000 + n], ch[:, FADE:], rtol=0, atol=1e-6)  # then only the closed hat
    assert np.abs(oh[:, 2000 + FADE:]).max() > 1e-3, "the open hat would still ring without the choke"


def test_a_saved_state_restored_into_a_new_instance_plays_the_same_sounds(companion, plugin, other):
    first = plugin
    wait_until(first, has_stock(36, 38))
    kick, snare = stocked(first)[36][0], stocked(first)[38][0]
    render(first, 0.5, [(0, 36, 127), (5000, 38, 127)])
    state = dpf_state(first)
    assert state["port"] == str(companion.port) and state["host"] == "127.0.0.1"
    plays_now(first, 36, kick)
    plays_now(first, 38, snare)
    saved = first.raw_state
    recipe = current(first)[36][1]
    for field in ('"model_hash"', '"seed"', '"sampler"', '"steps"', '"category"'):
        assert field in recipe  # the recipe travels with the project

    second = other  # it looked at a port where nobody is: the restored state names the companion's
    second.raw_state = saved
    assert dpf_state(second)["port"] == str(companion.port)
    wait_until(second, lambda p: current(p).get(36, ("",))[0] == kick, timeout=10)
    time.sleep(0.3)  # the worker has read the files
    render(second, 0.05)
    out = render(second, 0.8, [(1000, 36, 127), (1000 + 16000, 38, 100)])
    assert not out[:, :1000].any()
    assert_plays(out[:, :17000], 1000, kick, 127)
    assert_plays(out, 17000, snare, 100)


def test_a_missing_file_is_regenerated_from_its_recipe_to_the_same_samples(plugin, other):
    first = plugin
    wait_until(first, has_stock(36))
    kick = stocked(first)[36][0]
    render(first, 0.5, [(0, 36, 127)])
    plays_now(first, 36, kick)
    saved = first.raw_state
    original = read_wav(kick)
    Path(kick).unlink()
    Path(kick).with_suffix(".json").unlink()

    second = other
    second.raw_state = saved
    wait_until(second, lambda p: current(p).get(36, (kick,))[0] != kick, timeout=60)
    again = current(second)[36][0]
    assert Path(again).is_file() and again != kick
    assert "regenerated from its recipe" in status_line(second)
    out = render(second, 0.5, [(400, 36, 127)])
    assert not out[:, :400].any()
    np.testing.assert_allclose(out[:, 400:400 + original.shape[1]], original, rtol=0, atol=1e-6)  # same seed, same model


def test_a_host_at_another_rate_hears_the_file_resampled(plugin):
    import soxr

    render(plugin, 0.05, rate=48000)  # the host changes its rate: the stock is read again at 48 kHz
    time.sleep(0.3)
    wait_until(plugin, has_stock(36), rate=48000)
    path = stocked(plugin)[36][0]
    out = render(plugin, 0.5, [(1000, 36, 127)], rate=48000)
    assert not out[:, :1000].any()
    wav = read_wav(path)
    expected = soxr.resample(wav.T, RATE, 48000, quality="HQ").T
    n = expected.shape[1]
    heard = out[:, 1000:1000 + n]
    assert abs(np.count_nonzero(np.abs(out[0]) > 0) - n) < 64
    peak = np.abs(expected).max()
    assert np.abs(heard - expected).max() < 0.01 * peak  # libsoxr in both, run in one piece vs in chunks
    render(plugin, 0.05)  # back to 44.1 kHz for the other tests
    time.sleep(0.3)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_a_companion_it_is_silent_and_recovers_when_one_starts(tmp_path, other):
    port = _free_port()
    plugin = other
    # a project that names a port where no companion runs yet, and a pad of its own: note 60 plays kicks
    set_state(plugin, port=str(port), notes="60=kick", pads="")
    render(plugin, 0.5)  # whatever it played before rings out
    started = time.monotonic()
    while time.monotonic() - started < 3.0:  # a few retries (every 2 s): silence, never a stall
        t0 = time.monotonic()
        out = render(plugin, 0.1, [(10, 60, 127)])
        assert time.monotonic() - t0 < 1.0
        assert not out.any()
        time.sleep(0.05)
    assert status_line(plugin).startswith("companion missing")
    server = Companion(tmp_path / "out", port=port)
    try:
        wait_until(plugin, has_stock(60), timeout=60)
        path = stocked(plugin)[60][0]
        assert_plays(render(plugin, 0.5, [(100, 60, 127)]), 100, path, 127)
        server.stop()  # gone again: the plugin notices, keeps playing what it holds, stays silent otherwise
        wait_until(plugin, lambda p: status_line(p).startswith("companion missing"), timeout=20)
        server.start()
        wait_until(plugin, lambda p: not status_line(p).startswith("companion missing"), timeout=30)
        wait_until(plugin, has_stock(60), timeout=60)
        fresh = stocked(plugin)[60][0]
        assert fresh != path
        assert_plays(render(plugin, 0.5, [(5, 60, 127)]), 5, fresh, 127)
    finally:
        server.stop()


def test_two_instances_on_one_companion_each_get_their_own_sounds(companion, plugin, other):
    one, two = plugin, other
    set_state(two, port=str(companion.port), notes="60=kick", pads="")  # a second track: its own kick on note 60
    deadline = time.monotonic() + 90
    while not (has_stock(36, 38)(one) and has_stock(60)(two)):
        assert time.monotonic() < deadline, (dpf_state(one)["status"], dpf_state(two)["status"])
        for p in (one, two):
            assert not render(p, 0.05).any()
        time.sleep(0.1)
    files_one = {f for files in stocked(one).values() for f in files}
    files_two = {f for files in stocked(two).values() for f in files}
    assert not files_one & files_two, "each instance stocks the replies to its own requests"
    assert_plays(render(one, 0.5, [(256, 36, 127)]), 256, stocked(one)[36][0], 127)
    assert_plays(render(two, 0.5, [(777, 60, 127)]), 777, stocked(two)[60][0], 127)


def test_vary_plays_a_variation_of_the_pads_sound_on_the_next_hit(plugin):
    wait_until(plugin, has_stock(38))
    source = stocked(plugin)[38][0]
    render(plugin, 0.5, [(0, 38, 127)])
    plays_now(plugin, 38, source)
    plugin.vary = True  # automation of Vary: the companion renders a variation of the last pad's sound
    render(plugin, 0.05)
    plugin.vary = False
    wait_until(plugin, lambda p: current(p)[38][0] != source, timeout=60)
    varied, recipe = current(plugin)[38]
    doc = json.loads(recipe)
    assert doc["kind"] == "variation" and doc["recipe"]["sources"] == [source]  # the companion's recipe names its source
    assert_plays(render(plugin, 0.5, [(64, 38, 127)]), 64, varied, 127)


def test_bad_state_values_are_refused_and_the_old_ones_kept(plugin):
    before = dpf_state(plugin)
    set_state(plugin, port="99999", notes="36 300")
    render(plugin, 0.05)
    after = dpf_state(plugin)
    assert after["port"] == before["port"] and after["notes"] == before["notes"]
    set_state(plugin, port="9x", notes="20")  # not a number; a note without a default category
    render(plugin, 0.05)
    after = dpf_state(plugin)
    assert after["port"] == before["port"] and after["notes"] == before["notes"]
    set_state(plugin, pads="not a pad state")
    render(plugin, 0.05)
    assert dpf_state(plugin)["pads"] == before["pads"]  # the pads it had
    # and it keeps working: the valid pads of the first two restores came back, the next hit plays them
    assert_plays(render(plugin, 0.5, [(10, 36, 127)]), 10, current(plugin)[36][0], 127)
