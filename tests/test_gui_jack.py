"""The window on a real JACK server: a click on a pad, a MIDI note on the companion's JACK MIDI port and a
double-click in the history must each be heard at the companion's JACK output ports, as the exact sample.

The window runs offscreen; the companion inside it opens PortAudio's JACK device and a virtual MIDI
port through rtmidi's JACK API; a JACK recorder in another process captures what it plays.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

try:
    import PySide6  # noqa: F401
except ImportError as exc:  # a missing package fails the run, naming the install line; it never skips
    raise ImportError("the window tests need PySide6: make test installs it (pip install pyside6-essentials)") from exc

from PySide6.QtCore import QPoint, Qt  # noqa: E402

from companion.config.settings import Settings  # noqa: E402
from companion.service.resident import Companion  # noqa: E402
from gui.bridge import Bridge  # noqa: E402
from gui.window import MainWindow  # noqa: E402
from models.audio_io import load_audio  # noqa: E402
from models.synth import CATEGORIES  # noqa: E402
from tests.conftest_jack import PERIOD, RATE, matching, onset, wait_for  # noqa: E402

pytest_plugins = ("tests.conftest_jack",)  # the jack_server and recorder fixtures

MASTER = 0.25  # under the limiter's knee: the output is the samples, linearly
VIRTUAL = "DD Companion GUI Test"


@pytest.fixture(scope="module")
def jwindow(jack_server, recorder, qapp, tmp_path_factory):
    import mido
    import torch

    from models.checkpoints import save_model
    from models.network import DiffusionAttnUnet1D
    from tests.reference_nets import tiny_config

    root = tmp_path_factory.mktemp("gui-jack")
    torch.manual_seed(1)
    config = tiny_config(name="tiny", categories=tuple(CATEGORIES), depth=4, c_mults=(8, 16, 16, 32),
                         n_attn_layers=0, sample_size=4096)  # 0.26 s at 16 kHz
    model = save_model(DiffusionAttnUnet1D(config), root / "tiny.safetensors")
    settings = Settings().updated({"folder": str(root / "out"), "osc_port": 0, "model": str(model), "device": "cpu",
                                   "steps": 3, "pool_size": 0, "live": 1, "audio_device": "system"})
    companion = Companion(settings, settings_file=root / "settings.toml",
                          rig_options={"virtual_name": VIRTUAL, "master_gain": MASTER})
    bridge = Bridge(companion, root / "settings.toml")
    bridge.start()
    window = MainWindow(bridge)
    window.show()
    assert companion.live.audio.error is None, companion.live.audio.error
    wait_for(lambda: all(len(p.stock) >= 2 for p in companion.live.rack.pads()), 120, "pads stocked")
    recorder.connect_to()
    port = mido.open_output(f"RtMidiIn Client:{VIRTUAL}")
    window.send = port.send
    yield window
    port.close()
    window.close()


def settle(window):
    rig = window.bridge.companion.live
    wait_for(lambda: rig.engine.status().state == "idle" and all(len(p.stock) >= 1 and not p.pending
                                                                 for p in rig.rack.pads()), 60, "refills done")
    wait_for(lambda: rig.mixer.active_voices() == 0, 10, "earlier sounds ended")


def record(qtbot, recorder, action, after=0.6, until=None):
    """Record while ``action()`` runs, keeping the Qt event loop turning, until ``until()`` holds (when
    given) and then ``after`` seconds more; the audio and the send index."""
    recorder.start()
    wait_for(lambda: recorder.refresh() > PERIOD * 4, 5, "recorder running")
    sent = recorder.index_of(recorder.now())
    action()
    if until is not None:
        qtbot.waitUntil(until, timeout=15_000)
    qtbot.wait(int(after * 1000))
    return recorder.stop().copy(), sent


def heard(audio, sample, gain=1.0):
    start = onset(audio)
    assert start >= 0, "nothing was heard"
    return start, matching(audio[start:], sample[onset(sample):] * np.float32(MASTER * gain))


def test_clicking_a_pad_plays_its_sample(jwindow, qtbot, recorder):
    settle(jwindow)
    pad = jwindow.pads.pads[36]
    shown = pad.view.path
    audio, sent = record(qtbot, recorder, lambda: qtbot.mouseClick(pad, Qt.MouseButton.LeftButton, pos=QPoint(30, 40)))
    rack = jwindow.bridge.rack
    current = rack.pad(36).current
    assert current is not None and current.path == shown  # the click played what the pad showed
    start, fraction = heard(audio, current.audio, rack.velocity_gain(100))  # a click hits at velocity 100
    assert fraction > 0.9, f"what was heard is not the pad's sample ({fraction:.0%} matches)"
    assert start - sent < int(0.25 * RATE)


def test_a_midi_note_lights_and_plays_the_pad(jwindow, qtbot, recorder):
    import mido

    settle(jwindow)
    pad = jwindow.pads.pads[38]
    assert not pad.lit
    lit = []
    jwindow.bridge.pad_played.connect(lambda note, velocity: lit.append((note, velocity, pad.lit)))
    audio, _ = record(qtbot, recorder, lambda: jwindow.send(mido.Message("note_on", note=38, velocity=127, channel=9)))
    assert (38, 127) in [(n, v) for n, v, _ in lit], "the window heard no hit of pad 38"
    qtbot.waitUntil(lambda: pad.view.path == jwindow.bridge.rack.pad(38).current.path, timeout=5000)
    start, fraction = heard(audio, jwindow.bridge.rack.pad(38).current.audio)
    assert fraction > 0.9, f"{fraction:.0%} of the pad's sample was heard"
    jwindow.send(mido.Message("note_on", note=38, velocity=127, channel=9))
    qtbot.waitUntil(lambda: pad.lit, timeout=5000)  # the pad flashes on the hit...
    qtbot.waitUntil(lambda: not pad.lit, timeout=5000)  # ...and goes dark again


def test_double_clicking_a_finished_sample_auditions_it(jwindow, qtbot, recorder):
    controls, history = jwindow.controls, jwindow.history
    controls.category.setCurrentText("bass")
    controls.count.setValue(1)
    controls.generate_button.click()
    qtbot.waitUntil(lambda: len(history.files()) >= 1, timeout=30_000)
    settle(jwindow)
    row = history.tree.topLevelItem(0)
    child = row.child(0)
    path = child.data(0, Qt.ItemDataRole.UserRole)
    expected = np.ascontiguousarray(load_audio(path, RATE, 2).T)  # what the rack plays: the file at 48 kHz

    history.tree.scrollToItem(child)
    rect = history.tree.visualItemRect(child)
    where = QPoint(rect.left() + 20, rect.center().y())  # the row is wider than the view: click near its start

    def double_click():  # as a user does it: a click, then the second click that makes it a double-click
        qtbot.mouseClick(history.tree.viewport(), Qt.MouseButton.LeftButton, pos=where)
        qtbot.mouseDClick(history.tree.viewport(), Qt.MouseButton.LeftButton, pos=where)

    # the rack reads and resamples the file in its worker before it plays: on a loaded machine that took
    # over half a second once, so the take runs until the rack says it started the sound, then 0.6 s on
    rack = jwindow.bridge.rack
    started = threading.Event()

    def listener(kind, info):
        if kind == "auditioned" and info.get("path") == str(path):
            started.set()

    rack.add_listener(listener)
    try:
        audio, _ = record(qtbot, recorder, double_click, until=started.is_set)
    finally:
        rack.remove_listener(listener)
    _, fraction = heard(audio, expected, rack.velocity_gain(100))
    assert fraction > 0.9, f"{fraction:.0%} of the file was heard"


def test_midi_learn_from_the_settings_panel_binds_the_next_cc(jwindow, qtbot):
    import mido

    panel = jwindow.settings_panel
    panel.learn_target.setCurrentIndex(panel.learn_target.findData("modifier:variation"))
    panel.learn_button.click()
    assert panel.learn_button.isChecked() and "waiting" in panel.learn_state.text()
    jwindow.send(mido.Message("control_change", control=21, value=127, channel=9))
    qtbot.waitUntil(lambda: not panel.learn_button.isChecked(), timeout=5000)
    assert "modifier:variation" in panel.learn_state.text() and "cc 21" in panel.learn_state.text()
    assert jwindow.bridge.rack.config["modifiers"]["variation"] == {"type": "cc", "number": 21}
    jwindow.send(mido.Message("control_change", control=21, value=0, channel=9))  # let go of the modifier
    panel.save_button.click()
    from companion.config.settings import load_settings

    saved = load_settings(jwindow.bridge.settings_file, must_exist=True)
    assert saved.pads["modifiers"]["variation"] == {"type": "cc", "number": 21}  # it survives a restart


def test_learning_a_new_note_for_a_pad_moves_it_in_the_grid(jwindow, qtbot):
    import mido

    panel, grid = jwindow.settings_panel, jwindow.pads
    panel.learn_target.setCurrentIndex(panel.learn_target.findData("pad:51"))
    panel.learn_button.click()
    jwindow.send(mido.Message("note_on", note=60, velocity=100, channel=9))
    qtbot.waitUntil(lambda: 60 in grid.pads, timeout=5000)
    assert 51 not in grid.pads and grid.pads[60].view.category == "open_hat" and len(grid.pads) == 16
    jwindow.send(mido.Message("note_on", note=60, velocity=100, channel=9))  # the pad now answers note 60
    qtbot.waitUntil(lambda: grid.pads[60].lit, timeout=5000)
