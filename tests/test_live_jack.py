"""End to end on a real JACK server: a MIDI note into the companion's port, audio out of its JACK port.

A test MIDI output plays the companion's virtual port (rtmidi's JACK API); a JACK recorder captures
the companion's PortAudio output ports. What is heard must be the pad's sample (to float precision),
start within a bounded time, follow velocity, respect the hi-hat choke group, and a second hit must
play a fresh sample. The MIDI input must survive its port being unplugged and plugged back.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from companion.config.settings import Params
from companion.engine.engine import Engine
from companion.engine.pool import Pool
from companion.live.rig import attach_live
from companion.output.folder import SampleFolder
from models.checkpoints import save_model
from models.network import DiffusionAttnUnet1D
from tests.conftest_jack import PERIOD, RATE, matching, onset, wait_for
from tests.reference_nets import tiny_config

MASTER = 0.25  # keeps the sum under the limiter's knee, so the output is the samples, linearly
CATEGORIES = ("kick", "snare", "clap", "closed_hat", "open_hat")
VIRTUAL = "DD Companion Test"
START_BOUND_FRAMES = int(0.25 * RATE)  # note sent -> sound at the port: generous on a shared CPU

pytest_plugins = ("tests.conftest_jack",)  # the jack_server and recorder fixtures


@pytest.fixture(scope="module")
def rig(jack_server, recorder, tmp_path_factory):
    import mido

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("live")
    torch.manual_seed(0)
    config = tiny_config(name="tiny", categories=CATEGORIES, depth=4, c_mults=(8, 16, 16, 32), n_attn_layers=0,
                         sample_size=8192)  # 0.5 s at 16 kHz: long enough to hear a choke
    model = save_model(DiffusionAttnUnet1D(config), root / "tiny.safetensors")
    engine = Engine(SampleFolder(root / "out"), params=Params(steps=3, pool_size=1))
    engine.load(model, device="cpu")
    pool = Pool(engine)
    engine.start()
    pool.start()
    live = attach_live(engine, midi_port=None, audio_device="system", master_gain=MASTER, virtual_name=VIRTUAL)
    assert live.audio.error is None, live.audio.error
    assert live.rack.wait_ready([36, 42, 46], timeout=60, stock=2)
    recorder.connect_to()
    port = mido.open_output(f"RtMidiIn Client:{VIRTUAL}")
    live.send = port.send
    yield live
    port.close()
    live.stop()
    engine.shutdown(10)
    torch.set_num_threads(saved)


def note(n, velocity=127):
    import mido

    return mido.Message("note_on", note=n, velocity=velocity, channel=9)


def settle(rig):
    """Let background refills finish, so a take competes with as little as possible on a busy CPU."""
    wait_for(lambda: rig.engine.status().state == "idle" and all(
        len(p.stock) >= 1 and not p.pending for p in rig.rack.pads() if p.error is None), 60, "refills done")
    wait_for(lambda: rig.mixer.active_voices() == 0, 10, "earlier sounds ended")  # a take starts in silence


def take(rig, recorder, notes, gap=0.12, after=0.7):
    """Record while ``notes`` ((pad, velocity)...) are sent ``gap`` s apart; return the audio and the
    recording index at which each note was sent."""
    settle(rig)
    recorder.start()
    wait_for(lambda: recorder.refresh() > PERIOD * 4, 5, "recorder running")
    sent = []
    for i, (pad, velocity) in enumerate(notes):
        if i:
            time.sleep(gap)
        sent.append(recorder.index_of(recorder.now()))
        rig.send(note(pad, velocity))
    time.sleep(after)
    return recorder.stop().copy(), sent


def hit_and_record(rig, recorder, pad, velocity=127):
    audio, sent = take(rig, recorder, [(pad, velocity)])
    return audio, sent[0]


def test_a_note_plays_the_pads_sample_promptly_and_a_second_hit_plays_a_fresh_one(rig, recorder):
    pad = rig.rack.pad(36)
    audio, sent_at = hit_and_record(rig, recorder, 36)
    first = pad.current
    start = onset(audio)
    assert start >= 0, "nothing was heard"
    # (a skipped JACK period under load shifts the recording against JACK's clock: only the bound is firm)
    assert start - sent_at < START_BOUND_FRAMES, f"sound began {(start - sent_at) / RATE * 1000:.1f} ms late"
    skip = onset(first.audio)  # a sample may begin with exact zeros
    heard = matching(audio[start:], first.audio[skip:] * MASTER)
    assert heard > 0.9, f"what was heard is not the pad's sample ({heard:.0%} of it matches)"
    assert first.path.is_file()  # it is in the watched folder too

    audio2, sent2 = hit_and_record(rig, recorder, 36)
    second = pad.current
    assert second.path != first.path and second.seed != first.seed
    start2 = onset(audio2)
    assert start2 - sent2 < START_BOUND_FRAMES
    new = matching(audio2[start2:], second.audio[onset(second.audio):] * MASTER)
    old = matching(audio2[start2:], first.audio[skip:] * MASTER)
    assert new > 0.9 and old < 0.05, (new, old)


def test_velocity_sets_the_gain(rig, recorder):
    rig.rack.config["behaviour"] = "keep"
    try:
        for velocity in (127, 64):
            audio, _ = hit_and_record(rig, recorder, 38, velocity)
            sample = rig.rack.pad(38).current.audio
            # the gain is one factor for the whole sound: its first 100 ms show it, and a JACK period skipped
            # under load later in the take (which shifts the rest of the recording) cannot hide it
            head = int(0.1 * RATE)
            sample = sample[onset(sample):][:head]
            heard = audio[onset(audio):][:head]
            gain = MASTER * (velocity / 127) ** 2
            assert matching(heard, sample * gain) > 0.9, f"velocity {velocity} is not heard at gain {gain}"
            other = MASTER * (127 / 127 if velocity == 64 else (64 / 127) ** 2)
            assert matching(heard, sample * other) < 0.05
    finally:
        rig.rack.config["behaviour"] = "new"


def test_a_closed_hat_chokes_the_open_hat(rig, recorder):
    rack = rig.rack
    rack.config["behaviour"] = "keep"  # no refills during the take: less for the CPU to do meanwhile
    try:
        for pad in (46, 42):
            rack.hit(pad, 0)  # picks the current samples, silently
        audio, sent = take(rig, recorder, [(46, 127), (42, 127)])
    finally:
        rack.config["behaviour"] = "new"
    open_hat, closed_hat = rack.pad(46).current.audio * MASTER, rack.pad(42).current.audio * MASTER
    start = onset(audio) - onset(open_hat)
    heard = audio[start:start + len(open_hat)]
    assert matching(heard[:int(0.05 * RATE)], open_hat[:int(0.05 * RATE)]) > 0.8  # the open hat began
    fade = int(0.005 * RATE) + 2
    # where the closed hat is heard, found by cross-correlation (JACK may skip a period under load)
    size = 1 << int(np.ceil(np.log2(len(audio) + len(closed_hat))))
    xcorr = np.fft.irfft(np.fft.rfft(audio[:, 0], size) * np.conj(np.fft.rfft(closed_hat[:, 0], size)), size)
    at = int(np.argmax(xcorr[:len(audio)]))
    heard_alone = matching(audio[at + fade:at + len(closed_hat)], closed_hat[fade:])
    assert heard_alone > 0.9, f"after the closed hat, more than the closed hat is heard ({heard_alone:.0%} match)"
    assert 0.05 * RATE < at - start < 0.4 * RATE
    still_open = open_hat[at - start + fade:]
    assert np.abs(still_open).max() > 1e-3  # without the choke the open hat would still sound there


def cc(number, value, channel=9):
    import mido

    return mido.Message("control_change", control=number, value=value, channel=channel)


def hit_with_modifier(rig, recorder, modifier_cc, pad, velocity=127):
    """Hold the modifier CC, hit ``pad``, let go; record what is heard once the modifier's render
    (a new job in the engine) finishes and plays."""
    before = rig.rack.pad(pad).current
    settle(rig)
    recorder.start()
    wait_for(lambda: recorder.refresh() > PERIOD * 4, 5, "recorder running")
    rig.send(cc(modifier_cc, 127))
    time.sleep(0.02)
    rig.send(note(pad, velocity))
    time.sleep(0.02)
    rig.send(cc(modifier_cc, 0))
    wait_for(lambda: rig.rack.pad(pad).current is not before, 30, "the modifier's sample")
    time.sleep(0.7)
    return recorder.stop().copy()


def test_the_variation_modifier_plays_a_variation_of_the_current_sound(rig, recorder):
    import json

    rack = rig.rack
    hit_and_record(rig, recorder, 38)  # a current sound to vary
    source = rack.pad(38).current
    audio = hit_with_modifier(rig, recorder, rack.config["modifiers"]["variation"]["number"], 38)
    varied = rack.pad(38).current
    assert varied.path != source.path
    sidecar = json.loads(varied.path.with_suffix(".json").read_text())
    assert sidecar["kind"] == "variation" and [Path(p).name for p in sidecar["recipe"]["sources"]] == [source.path.name]
    start = onset(audio)
    assert start >= 0
    assert matching(audio[start:], varied.audio[onset(varied.audio):] * MASTER) > 0.9  # the variation is heard
    assert matching(audio[start:], source.audio[onset(source.audio):] * MASTER) < 0.05


def test_lock_seed_keeps_the_sound_and_a_knob_rerenders_it_with_the_same_seed(rig, recorder):
    rack = rig.rack
    lock = rack.config["modifiers"]["lock_seed"]["number"]
    hit_and_record(rig, recorder, 40)
    current = rack.pad(40).current
    try:
        rig.send(cc(lock, 127))
        time.sleep(0.02)
        rig.send(note(40))
        time.sleep(0.02)
        rig.send(cc(lock, 0))
        wait_for(lambda: rack.pad(40).locked_seed is not None, 10, "the seed locked")
        assert rack.pad(40).locked_seed == current.seed
        audio, _ = hit_and_record(rig, recorder, 40)  # "new on every hit", but locked: the same sound
        assert rack.pad(40).current.path == current.path
        assert matching(audio[onset(audio):], current.audio[onset(current.audio):] * MASTER) > 0.9
        steps = next(e for e in rack.config["params"] if e["param"] == "steps")
        rig.send(cc(steps["number"], 127))  # the steps knob to its top: the locked pad re-renders
        wait_for(lambda: rack.pad(40).current.path != current.path, 30, "the re-render")
        again = rack.pad(40).current
        assert again.seed == current.seed and rig.engine.get_param("steps") == steps["high"]
        assert not np.array_equal(again.audio, current.audio)  # same seed, other steps: another render
    finally:
        rig.send(cc(next(e for e in rack.config["params"] if e["param"] == "steps")["number"], 0))
        wait_for(lambda: rig.engine.get_param("steps") == 4, 10, "steps back down")
        rig.engine.set_param("steps", 3)
        if rack.pad(40).locked_seed is not None:
            rig.send(cc(lock, 127))
            rig.send(note(40))
            rig.send(cc(lock, 0))
            wait_for(lambda: rack.pad(40).locked_seed is None, 30, "unlocked")


def test_an_unplugged_midi_controller_is_reported_and_reconnected(jack_server):
    import mido

    from companion.live.midi_in import MidiInput

    states = []
    controller = mido.open_output("DD Test Pads", virtual=True)
    time.sleep(0.1)
    midi = MidiInput("dd test pads", lambda m: None, poll_interval=0.1, on_state=lambda s, d: states.append(s))
    midi.start()
    try:
        assert midi.state == "open" and midi.port_name.endswith(":DD Test Pads")
        controller.close()
        wait_for(lambda: "unplugged" in states, 5, "unplug noticed")
        assert midi._port is None
        controller = mido.open_output("DD Test Pads", virtual=True)
        wait_for(lambda: "reconnected" in states, 5, "replug noticed")
        assert midi._port is not None and midi.port_name.endswith(":DD Test Pads")
        assert states == ["open", "unplugged", "reconnected"]
    finally:
        midi.stop()
        controller.close()


def test_velocity_zero_is_a_note_off_and_the_channel_filter_applies():
    import mido

    from companion.live.midi_in import MidiInput

    got = []
    midi = MidiInput("x", got.append, channel=9)
    midi._receive(mido.Message("note_on", note=36, velocity=0, channel=9))
    midi._receive(mido.Message("note_on", note=40, velocity=90, channel=3))
    midi._receive(mido.Message("note_on", note=37, velocity=100, channel=9))
    assert [(m.type, m.note) for m in got] == [("note_off", 36), ("note_on", 37)]


def test_a_missing_midi_port_waits_without_failing(jack_server):
    from companion.live.midi_in import MidiInput

    midi = MidiInput("No Such Controller", lambda m: None, poll_interval=0.1)
    midi.start()
    try:
        assert midi.state == "waiting"
    finally:
        midi.stop()


def test_a_sample_rate_jack_does_not_run_is_refused_clearly(jack_server):
    from companion.live.audio_device import AudioDeviceError
    from companion.live.audio_out import AudioOut
    from companion.live.mixer import Mixer

    out = AudioOut(lambda c, r: Mixer(c, r), "system", rate=44100)
    with pytest.raises(AudioDeviceError, match="44100 Hz"):
        out.open()
    assert out.mixer is None and "44100" in out.error
