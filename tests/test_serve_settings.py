"""`serve` with the live rig from the settings file: pad map, MIDI port and audio device in, learned bindings out.

No device is needed: the named audio device and MIDI port do not exist, so audio stays off and the
MIDI input waits (or reports that MIDI is unavailable), which is how the companion runs without them.
"""

from __future__ import annotations

import mido
import pytest

from companion.config.padmap import default_config
from companion.config.settings import Settings, load_settings, save_settings
from companion.service.resident import Companion

NO_AUDIO, NO_MIDI = "No Such Audio Device", "No Such Controller"

PADS_TOML = """
[pads]
channel = 9
behaviour = "keep"
stock = 0                      # no renders: nothing to wait for
pads = [
  {note = 36, category = "kick", choke = 0, cuts = []},
  {note = 38, category = "snare", choke = 0, cuts = []},
  {note = 42, choke = 0, cuts = [1]},   # no category: the unconditional model
]

[pads.modifiers]
regenerate = {type = "note", number = 60}
"""


@pytest.fixture
def companion_from(tmp_path, model_file):
    running = []

    def start(path, **overrides):
        settings = load_settings(path, must_exist=True).updated(
            {"folder": str(tmp_path / "out"), "osc_port": 0, "model": str(model_file), "device": "cpu",
             "steps": 3, "pool_size": 0, **overrides})
        companion = Companion(settings, settings_file=path, rig_options={"poll_interval": 0.1})
        running.append(companion)
        companion.start()
        return companion

    yield start
    for companion in running:
        companion.stop()


def test_a_live_companion_takes_its_rig_from_the_settings_file(tmp_path, companion_from):
    path = tmp_path / "settings.toml"
    path.write_text(f'live = 1\nmidi_port = "{NO_MIDI}"\naudio_device = "{NO_AUDIO}"\n{PADS_TOML}')
    companion = companion_from(path)
    rig = companion.live
    assert rig is not None and companion.bridge.rack is rig.rack
    assert rig.rack.config["behaviour"] == "keep" and rig.rack.config["channel"] == 9
    assert [(p.note, p.category) for p in rig.rack.pads()] == [(36, "kick"), (38, "snare"), (42, None)]
    assert rig.rack.config["modifiers"]["regenerate"] == {"type": "note", "number": 60}
    assert rig.midi.wanted == NO_MIDI and rig.audio.device_name == NO_AUDIO
    assert rig.audio.error is not None  # no such device: audio off, the companion runs on
    assert any("pads: 3" in line for line in companion.describe())


def test_save_settings_keeps_learned_bindings_and_run_time_changes(tmp_path, companion_from):
    path = tmp_path / "settings.json"
    save_settings(Settings(live=1, midi_port=NO_MIDI, audio_device=NO_AUDIO, pads={"stock": 0}), path)
    companion = companion_from(path)
    rack = companion.live.rack
    learned = rack.learn("pad:36")
    rack.handle(mido.Message("note_on", note=60, velocity=100))
    assert learned.result(5) == {"target": "pad:36", "type": "note", "number": 60}
    companion.engine.set_param("steps", 7)
    assert companion.save_settings() == path  # the file it was started from

    again = load_settings(path)
    assert (again.live, again.midi_port, again.audio_device, again.steps) == (1, NO_MIDI, NO_AUDIO, 7)
    notes = {p["note"]: p["category"] for p in again.pads["pads"]}
    assert notes[60] == "kick" and 36 not in notes
    assert again.pads == rack.to_config()
    restarted = companion_from(path)  # a restart comes back with the learned pad
    assert restarted.live.rack.pad(60).category == "kick"


def test_the_default_pad_map_stays_unset_and_a_companion_without_live_has_no_rig(tmp_path, companion_from):
    path = tmp_path / "plain.toml"
    save_settings(Settings(live=1, audio_device=NO_AUDIO, midi_port=NO_MIDI), path)
    companion = companion_from(path)
    assert companion.live.rack.config == default_config()
    saved = tmp_path / "saved.toml"
    companion.save_settings(saved)
    assert load_settings(saved).pads is None and "[pads]" not in saved.read_text()
    quiet = companion_from(path, live=0)
    assert quiet.live is None and quiet.bridge.rack is None and quiet.settings_in_effect().live == 0
