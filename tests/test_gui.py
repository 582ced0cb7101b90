"""The window on the offscreen Qt platform, driven through real widgets, on a real companion (tiny model).

Audio and MIDI are off here (no device named like this exists), which the window must survive;
tests/test_gui_jack.py plays through a real JACK server. What is checked is what a user sees or
gets: thumbnails drawn in pixels, WAV files behind drags, the settings file written, errors shown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

try:
    import PySide6  # noqa: F401
except ImportError as exc:  # a missing package fails the run, naming the install line; it never skips
    raise ImportError("the window tests need PySide6: make test installs it (pip install pyside6-essentials)") from exc

from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from companion.config.settings import Settings, load_settings  # noqa: E402
from companion.service.resident import Companion  # noqa: E402
from gui import pad_grid  # noqa: E402
from gui.bridge import Bridge  # noqa: E402
from gui.waveform import peaks  # noqa: E402
from gui.window import MainWindow  # noqa: E402
from models.synth import CATEGORIES  # noqa: E402
from tests.reference_nets import save_tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WAVE = (0x8F, 0xD3, 0xFF)  # the thumbnails' colour (gui/pad_grid.py)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("gui-model") / "tiny.safetensors", categories=tuple(CATEGORIES))


def make_companion(tmp_path, model, **overrides):
    settings = Settings().updated({"folder": str(tmp_path / "out"), "osc_port": 0, "model": str(model),
                                   "device": "cpu", "steps": 3, "pool_size": 0, "live": 1,
                                   "audio_device": "No Such Audio Device", **overrides})
    return Companion(settings, settings_file=tmp_path / "settings.toml", rig_options={"midi": False})


@pytest.fixture
def window(qtbot, tmp_path, tiny_model):
    bridge = Bridge(make_companion(tmp_path, tiny_model), tmp_path / "settings.toml", keep={"live": 0})
    bridge.start()
    win = MainWindow(bridge)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: all(p.view.path is not None for p in win.pads.pads.values()), timeout=60_000)
    yield win
    win.close()


def wave_pixels(image: QImage) -> int:
    """How many pixels have the thumbnails' colour."""
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    arr = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    b, g, r = arr[:, : image.width(), 0].astype(int), arr[:, : image.width(), 1], arr[:, : image.width(), 2]
    return int(((abs(r - WAVE[0]) < 12) & (abs(g - WAVE[1]) < 12) & (abs(b - WAVE[2]) < 12)).sum())


def test_peaks_follow_the_sound():
    audio = np.zeros((1000, 2), np.float32)
    audio[:100] = 0.8
    audio[500:550, 0] = -1.0  # half of the sixth slice, in one channel
    table = peaks(audio, 10)
    assert table.shape == (10, 2)
    assert table[0].tolist() == pytest.approx([0.8, 0.8])
    assert table[5].tolist() == pytest.approx([-0.5, 0.0])  # the channels' mean
    assert not table[9].any()
    assert not peaks(np.zeros((0, 2), np.float32), 4).any()
    with pytest.raises(ValueError, match="columns"):
        peaks(audio, 0)


def test_every_pad_shows_its_category_note_and_a_drawn_waveform(window):
    assert len(window.pads.pads) == 16
    for note, pad in window.pads.pads.items():
        view = pad.view
        assert view.note == note and view.state == "ready" and view.path.is_file()
        assert pad.has_waveform()
        assert wave_pixels(pad.grab().toImage()) > 200, f"pad {note} has no waveform drawn"
        assert pad.view.category in CATEGORIES
    assert window.pads.pads[36].view.category == "kick" and window.pads.pads[42].view.category == "closed_hat"
    assert "36" in window.pads.pads[36].toolTip() and "C1" in window.pads.pads[36].toolTip()


def test_the_status_bar_names_model_osc_and_the_audio_error(window, qtbot):
    labels = window.status_labels
    qtbot.waitUntil(lambda: "tiny" in labels["model"].text())
    assert "torch-cpu" in labels["model"].text()
    from companion.config.version import VERSION

    title = window.windowTitle()  # the version, the model and the runtime, as `dd-companion --version` says
    assert title.startswith(f"DD Companion {VERSION} · ") and "tiny" in title and "torch-cpu" in title
    host, port = window.bridge.companion.server.address
    url = window.bridge.companion.oscquery.url
    assert labels["osc"].text() == f"OSC udp://{host}:{port} · OSCQuery {url}"
    with urllib.request.urlopen(url + "?HOST_INFO", timeout=10) as response:  # the window's own OSCQuery
        assert json.loads(response.read())["OSC_PORT"] == port
    assert "audio is off" in window.error_label.text()  # no such device here: said plainly, window runs on


def test_regenerate_changes_the_pad_and_its_thumbnail(window, qtbot):
    pad = window.pads.pads[38]
    before_path, before = pad.view.path, pad.grab().toImage()
    menu = pad.context_menu()
    next(a for a in menu.actions() if a.text() == "Regenerate").trigger()
    qtbot.waitUntil(lambda: pad.view.path != before_path, timeout=30_000)
    assert pad.view.path.is_file() and pad.view.seed is not None
    assert pad.grab().toImage() != before, "the thumbnail did not change"


def test_lock_seed_marks_the_pad_locked(window, qtbot):
    pad = window.pads.pads[36]
    window.bridge.pad_action("regenerate", 36)  # a current sample to lock
    qtbot.waitUntil(lambda: window.bridge.rack.pad(36).current is not None, timeout=30_000)
    next(a for a in pad.context_menu().actions() if a.text() == "Lock seed").trigger()
    qtbot.waitUntil(lambda: pad.view.state == "locked", timeout=10_000)
    assert window.bridge.rack.pad(36).locked_seed == pad.view.seed
    assert any(a.text() == "Unlock seed" for a in pad.context_menu().actions())


def test_dragging_a_pad_carries_its_wav_file(window, qtbot, monkeypatch):
    pad = window.pads.pads[40]
    mime = pad.mime_data()
    urls = mime.urls()
    assert len(urls) == 1 and urls[0].isLocalFile()
    path = Path(urls[0].toLocalFile())
    assert path.is_file() and path.suffix == ".wav" and path == pad.view.path.resolve()
    info = sf.info(str(path))
    assert info.frames > 0 and info.samplerate == 16000

    started = []

    class RecordingDrag(pad_grid.QDrag):
        def exec(self, *actions):  # a real drag would wait for a drop target; record what it carries
            started.append(self.mimeData().urls()[0].toLocalFile())
            return Qt.DropAction.CopyAction

    monkeypatch.setattr(pad_grid, "QDrag", RecordingDrag)
    qtbot.mousePress(pad, Qt.MouseButton.LeftButton, pos=QPoint(20, 40))
    qtbot.mouseMove(pad, QPoint(80, 70))
    qtbot.mouseRelease(pad, Qt.MouseButton.LeftButton, pos=QPoint(80, 70))
    assert started == [str(path)], "moving the pressed mouse did not start a file drag"


def test_a_setting_changed_in_the_panel_is_saved_and_applied(window, tmp_path):
    panel = window.settings_panel
    panel.pool_size.setValue(3)
    panel.osc_port.setValue(9123)
    panel.behaviour.setCurrentIndex(1)  # audition, then keep
    panel.save_button.click()
    path = tmp_path / "settings.toml"
    saved = load_settings(path, must_exist=True)
    assert saved.pool_size == 3 and saved.osc_port == 9123
    assert saved.pads["behaviour"] == "keep"
    assert saved.live == 0  # the window forces the rig on, but keeps the file's choice for 'serve'
    assert window.bridge.companion.engine.params.pool_size == 3  # the live parameter applies at once
    assert str(path) in panel.saved_label.text()


def test_the_tail_gate_set_in_the_panel_is_saved_and_applied(window, tmp_path):
    panel = window.settings_panel
    assert panel.gate_mode.currentData() == "model" and not panel.gate_db.isEnabled()
    panel.gate_mode.setCurrentIndex(2)  # a threshold of one's own
    assert panel.gate_db.isEnabled()
    panel.gate_db.setValue(-55.0)
    panel.save_button.click()
    path = tmp_path / "settings.toml"
    assert load_settings(path, must_exist=True).tail_gate == -55.0
    assert window.bridge.companion.engine.params.tail_gate == -55.0  # applies at once
    panel.gate_mode.setCurrentIndex(1)  # off
    panel.save_button.click()
    assert load_settings(path, must_exist=True).tail_gate == 0.0
    assert window.bridge.companion.engine.params.tail_gate == 0.0
    panel.gate_mode.setCurrentIndex(0)  # back to the model's recommendation
    panel.save_button.click()
    assert load_settings(path, must_exist=True).tail_gate is None
    assert window.bridge.companion.engine.params.tail_gate is None


def test_the_band_limits_switched_off_in_the_panel_are_saved_and_applied(window, tmp_path):
    panel = window.settings_panel
    assert panel.band_limit.isChecked()  # unset: the model's band limits, on
    panel.band_limit.setChecked(False)
    panel.save_button.click()
    path = tmp_path / "settings.toml"
    assert load_settings(path, must_exist=True).band_limit == 0
    assert window.bridge.companion.engine.params.band_limit == 0  # applies at once
    panel.band_limit.setChecked(True)
    panel.save_button.click()
    assert load_settings(path, must_exist=True).band_limit is None
    assert window.bridge.companion.engine.params.band_limit is None


def test_a_bad_model_file_shows_an_error_and_the_previous_model_stays(window, qtbot, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a model" * 10)
    assert window.controls.load_model(bad) is not None
    qtbot.waitUntil(lambda: "broken.safetensors" in window.error_label.text(), timeout=30_000)
    assert window.bridge.model().name == "tiny"
    assert window.controls.model.currentText() == "tiny" and "loading" not in window.controls.model_info.text()
    assert window.isVisible()
    assert window.controls.generate() is not None  # and it still works


def test_generate_lists_the_files_in_the_history(window, qtbot):
    controls = window.controls
    controls.category.setCurrentText("snare")
    controls.count.setValue(2)
    controls.random_seed.setChecked(False)
    controls.seed.setValue(1234)
    controls.generate_button.click()
    history = window.history
    qtbot.waitUntil(lambda: len(history.files()) == 2, timeout=30_000)
    files = [Path(f) for f in history.files()]
    assert all(f.is_file() and f.parent.name.lower().startswith("snare") for f in files)
    row = history.tree.topLevelItem(0)
    assert row.text(1) == "generate" and "done" in row.text(3)
    assert [row.child(i).text(4) for i in range(2)] == ["seed 1234", "seed 1235"]


def test_guidance_shows_the_value_in_effect_and_is_sent_with_the_windows_requests(window, qtbot, tmp_path):
    controls, engine, history = window.controls, window.bridge.companion.engine, window.history
    assert controls.default_guidance.isChecked() and not controls.guidance.isEnabled()
    assert controls.guidance.value() == 1.0  # the tiny model recommends no guidance
    engine.set_param("guidance", 2.5)  # as /dd/set guidance 2.5 from a DAW would
    qtbot.waitUntil(lambda: controls.guidance.value() == 2.5, timeout=5_000)  # the status poll shows it

    qtbot.mouseClick(controls.default_guidance, Qt.MouseButton.LeftButton)  # untick "default": my own scale
    assert not controls.default_guidance.isChecked() and controls.guidance.isEnabled()
    controls.guidance.setValue(3.0)
    controls.category.setCurrentText("snare")
    controls.generate_button.click()
    qtbot.waitUntil(lambda: history.tree.topLevelItemCount() >= 1 and "done" in history.tree.topLevelItem(0).text(3),
                    timeout=30_000)
    row = history.tree.topLevelItem(0)
    assert row.text(1) == "generate" and "guidance 3" in row.text(4)
    path = Path(history.files()[0])
    assert json.loads(path.with_suffix(".json").read_text())["recipe"]["guidance"] == 3.0
    assert engine.get_param("guidance") == 2.5  # the window's own scale went with its request only

    qtbot.mouseClick(controls.default_guidance, Qt.MouseButton.LeftButton)  # back to the value in effect
    assert controls.guidance.value() == 2.5 and not controls.guidance.isEnabled()
    engine.set_param("guidance", None)  # unset: a model's own recommendation shows once it is loaded
    recommends = save_tiny(tmp_path / "recommends.safetensors", categories=tuple(CATEGORIES), name="recommends",
                           guidance=2.0)
    assert controls.load_model(recommends) is not None
    qtbot.waitUntil(lambda: window.bridge.model().name == "recommends" and controls.guidance.value() == 2.0,
                    timeout=30_000)
    plain = save_tiny(tmp_path / "plain.safetensors", categories=(), name="plain")
    assert controls.load_model(plain) is not None
    qtbot.waitUntil(lambda: window.bridge.model().name == "plain", timeout=30_000)
    qtbot.waitUntil(lambda: not controls.default_guidance.isEnabled(), timeout=5_000)
    assert controls.default_guidance.isChecked() and controls.guidance.value() == 1.0  # nothing to guide


def test_a_bad_request_is_shown_not_raised(window, qtbot):
    assert window.bridge.generate("didgeridoo") is None
    assert "didgeridoo" in window.error_label.text()


def test_variation_of_a_dropped_file_and_a_morph_between_pads(window, qtbot, tmp_path):
    source = window.pads.pads[36].view.path
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(source))])
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    window.dropEvent(drop)
    history = window.history
    qtbot.waitUntil(lambda: history.tree.topLevelItemCount() >= 1 and "done" in history.tree.topLevelItem(0).text(3),
                    timeout=30_000)
    assert history.tree.topLevelItem(0).text(1) == "variation"

    window.controls.frames.setValue(3)
    window.controls.morph_button.click()
    qtbot.waitUntil(lambda: history.tree.topLevelItem(0).text(1) == "morph"
                    and "done" in history.tree.topLevelItem(0).text(3), timeout=60_000)
    row = history.tree.topLevelItem(0)
    assert row.childCount() == 3 and all(Path(row.child(i).data(0, Qt.ItemDataRole.UserRole)).is_file()
                                         for i in range(3))


def test_screenshot_command_draws_the_pads(tmp_path, tiny_model):
    shot = tmp_path / "shot.png"
    config = tmp_path / "s.toml"
    config.write_text(f'folder = "{tmp_path / "out"}"\nsteps = 3\npool_size = 0\n'
                      'audio_device = "No Such Audio Device"\n')
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-m", "companion", "gui", "--config", str(config), "--model",
                           str(tiny_model), "--screenshot", str(shot), "--wait", "120"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"screenshot saved to {shot}" in done.stdout
    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 500
    # sixteen drawn waveforms, not a blank window: thousands of thumbnail-coloured pixels
    assert wave_pixels(image) > 16 * 200
    assert load_settings(config).live == 0  # the screenshot saved nothing


def test_make_run_falls_back_to_serve_without_a_display(tmp_path, tiny_model):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    config = tmp_path / "s.toml"
    config.write_text(f'folder = "{tmp_path / "out"}"\nosc_port = 0\npool_size = 0\nmodel = "{tiny_model}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "companion", "gui", "--or-serve", "--config", str(config)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "ready" in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    text = "".join(lines)
    assert "no display" in text and "headless" in text, text
    assert "dd-companion serve: ready" in text


def test_an_exception_in_a_slot_becomes_a_readable_message(window, qtbot, monkeypatch):
    from gui.app import report_unexpected_errors

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    report_unexpected_errors(window.bridge)

    def broken(_view):
        raise RuntimeError("a bug in a slot")

    window.bridge.job_changed.connect(broken)
    try:
        window.controls.generate()
        qtbot.waitUntil(lambda: "a bug in a slot" in window.error_label.text(), timeout=10_000)
    finally:
        window.bridge.job_changed.disconnect(broken)
    assert "RuntimeError" in window.error_label.text() and window.isVisible()
