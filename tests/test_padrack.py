"""The pad rack without devices or a model: MIDI learn, CC -> parameters, modifiers, velocity, config."""

from __future__ import annotations

import time

import mido
import numpy as np
import pytest

from companion.config.padmap import PadMapError, check_config
from companion.live.mixer import Mixer
from companion.live.padrack import PadRack, PadSample


class FakeEngine:
    model = None

    def __init__(self):
        self.params, self.submitted = {}, []

    def add_listener(self, listener):
        pass

    def remove_listener(self, listener):
        pass

    def submit(self, request, listener=None):
        self.submitted.append(request)

    def set_param(self, name, value):
        self.params[name] = value
        return value


def msg(kind, **kw):
    return mido.Message(kind, **kw)


def wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def rack():
    r = PadRack(FakeEngine())
    r.start()
    wait(lambda: r._tasks.empty())  # the start-up reset has run
    time.sleep(0.05)
    yield r
    r.stop()


def test_learn_binds_the_next_note_to_a_pad_and_the_next_cc_to_a_parameter(rack):
    future = rack.learn("pad:36")
    rack.handle(msg("control_change", control=1, value=10))  # a pad needs a note: still armed
    assert not future.done()
    rack.handle(msg("note_on", note=60, velocity=100))
    assert future.result(1) == {"target": "pad:36", "type": "note", "number": 60}
    assert rack.pad(60).category == "kick"
    assert 60 in [p["note"] for p in rack.to_config()["pads"]]
    knob = rack.learn("param:steps")
    rack.handle(msg("control_change", control=21, value=127))
    assert knob.result(1)["number"] == 21
    rack.handle(msg("control_change", control=21, value=127))
    wait(lambda: rack.engine.params.get("steps") == 100)  # the default map: 4..100


def test_the_guidance_knob_sets_the_guidance_and_empties_the_stock(rack):
    pad = rack.pad(36)
    pad.stock.append(PadSample(np.zeros((64, 2), np.float32), "/x/old.wav", 1))
    rack.handle(msg("control_change", control=108, value=127))  # the default map: CC 108, guidance 1..5
    wait(lambda: rack.engine.params.get("guidance") == 5.0)
    wait(lambda: not any(s.path == "/x/old.wav" for s in pad.stock))  # made with the old guidance
    rack.handle(msg("control_change", control=108, value=0))
    wait(lambda: rack.engine.params.get("guidance") == 1.0)


def test_a_new_learn_cancels_the_previous_one_and_bad_targets_are_refused(rack):
    first = rack.learn("modifier:regenerate")
    second = rack.learn("modifier:variation")
    assert first.cancelled()
    rack.handle(msg("note_on", note=70, velocity=100))
    assert second.result(1)["type"] == "note"
    with pytest.raises(PadMapError, match="pad:<note>"):
        rack.learn("pad:999")


def test_hits_play_with_velocity_gain_and_a_held_modifier_regenerates(rack):
    mixer = Mixer(2, 48000)
    rack.attach_output(mixer)
    pad = rack.pad(36)
    a, b = (PadSample(np.full((64, 2), v, np.float32), f"/x/{v}.wav", i) for i, v in enumerate((0.1, 0.2)))
    pad.stock.extend([a, b])
    rack.config["behaviour"] = "keep"
    rack.handle(msg("note_on", note=36, velocity=64))
    assert pad.current is a and list(pad.stock) == [b]
    out = np.zeros((64, 2), np.float32)
    mixer.render(out)
    np.testing.assert_allclose(out, 0.1 * (64 / 127) ** 2, rtol=1e-5)
    rack.handle(msg("control_change", control=102, value=127))  # hold "regenerate"
    rack.handle(msg("note_on", note=36, velocity=127))
    wait(lambda: pad.current is b)
    rack.handle(msg("control_change", control=102, value=0))
    rack.handle(msg("note_on", note=36, velocity=127))  # keep: the kept sample again
    assert pad.current is b


def test_the_config_is_checked_naming_the_bad_value():
    with pytest.raises(PadMapError, match="behaviour must be one of new, keep"):
        check_config({"behaviour": "loop"})
    with pytest.raises(PadMapError, match="pad note must be an integer in 0..127"):
        check_config({"pads": [{"note": 200}]})
    with pytest.raises(PadMapError, match="unknown pad rack key"):
        check_config({"pad": []})
    default = check_config(None)
    assert [p["note"] for p in default["pads"]] == list(range(36, 52))
    hats = {p["note"]: p for p in default["pads"]}
    assert hats[46]["choke"] == 1 and hats[42]["cuts"] == [1]
