"""Settings: output folder, audio device, MIDI port and MIDI learn, OSC ports, backend, pool size, tail gate, band limits,
pads.

"Save" writes the same settings file the headless ``serve`` reads (via the bridge). The pool size, the
tail gate, the band limits, the pad behaviour and the audio device apply at once; the folder, OSC ports, MIDI port and backend at
the next start, as the panel says.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from companion.config.padmap import MODIFIERS, PARAMS
from companion.live.audio_device import AudioDeviceError, output_devices
from companion.live.midi_in import VIRTUAL_NAME, MidiPortError, input_names
from gui.bridge import Bridge
from gui.pad_grid import label
from models.backend import BACKENDS
from models.finish import TAIL_GATE_RANGE

DEFAULT_AUDIO = "(system default)"
GATE_MODES = (("model's choice", "model"), ("off", "off"), ("threshold", "threshold"))
VIRTUAL_MIDI = f"(virtual port '{VIRTUAL_NAME}')"


class SettingsPanel(QWidget):
    def __init__(self, bridge: Bridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        s = bridge.settings
        outer = QVBoxLayout(self)

        files = QGroupBox("Output (next start)")
        form = QFormLayout(files)
        folder_row = QHBoxLayout()
        self.folder = QLineEdit(s.folder)
        self.folder.setPlaceholderText(str(bridge.companion.folder.root))
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(browse)
        form.addRow("Folder", folder_row)
        outer.addWidget(files)

        live = QGroupBox("Audio and MIDI")
        form = QFormLayout(live)
        self.audio = QComboBox()
        self.midi = QComboBox()
        self.behaviour = QComboBox()
        self.behaviour.addItem("new sample on every hit", "new")
        self.behaviour.addItem("audition, then keep", "keep")
        rack = bridge.rack
        if rack is not None:
            self.behaviour.setCurrentIndex(0 if rack.config["behaviour"] == "new" else 1)
        rescan = QPushButton("Rescan devices")
        rescan.clicked.connect(self.refresh_devices)
        form.addRow("Audio output", self.audio)
        form.addRow("MIDI input (next start)", self.midi)
        form.addRow("Pads", self.behaviour)
        form.addRow(rescan)
        learn_row = QHBoxLayout()
        self.learn_target = QComboBox()
        for note in bridge.pad_notes():
            self.learn_target.addItem(f"pad {note} ({label(bridge.pad_view(note).category)})", f"pad:{note}")
        for name in MODIFIERS:
            self.learn_target.addItem(f"modifier: {name.replace('_', ' ')}", f"modifier:{name}")
        for name in PARAMS:
            self.learn_target.addItem(f"knob: {name}", f"param:{name}")
        self.learn_button = QPushButton("Learn")
        self.learn_button.setCheckable(True)
        self.learn_button.toggled.connect(self._learn)
        learn_row.addWidget(self.learn_target, 1)
        learn_row.addWidget(self.learn_button)
        self.learn_state = QLabel("arm a target, then hit a pad or move a knob")
        form.addRow("MIDI learn", learn_row)
        form.addRow(self.learn_state)
        outer.addWidget(live)

        net = QGroupBox("OSC and engine (next start)")
        form = QFormLayout(net)
        self.osc_port = QSpinBox(minimum=0, maximum=65535, value=s.osc_port)
        self.reply_port = QSpinBox(minimum=0, maximum=65535, value=s.reply_port or 0, specialValueText="sender's port")
        self.backend = QComboBox()
        self.backend.addItems(list(BACKENDS))
        self.backend.setCurrentText(s.backend)
        self.device = QLineEdit(s.device)
        self.pool_size = QSpinBox(minimum=0, maximum=64, value=s.pool_size)
        form.addRow("OSC port", self.osc_port)
        form.addRow("Reply port", self.reply_port)
        form.addRow("Backend", self.backend)
        form.addRow("Device", self.device)
        form.addRow("Pool size (now)", self.pool_size)
        gate_row = QHBoxLayout()  # the tail gate: the model's recommendation, off, or a threshold of one's own
        self.gate_mode = QComboBox()
        for text, mode in GATE_MODES:
            self.gate_mode.addItem(text, mode)
        self.gate_mode.setToolTip("push what lies more than the threshold under a sound's loudest 10 ms further "
                                  "down: takes a model's hiss and rumble floor out of the tails")
        self.gate_db = QDoubleSpinBox(minimum=TAIL_GATE_RANGE[0], maximum=TAIL_GATE_RANGE[1], singleStep=5.0,
                                      decimals=1, suffix=" dB")
        self.gate_db.setValue(s.tail_gate if s.tail_gate not in (None, 0.0) else -40.0)
        self.gate_mode.setCurrentIndex(0 if s.tail_gate is None else 1 if s.tail_gate == 0.0 else 2)
        self.gate_mode.currentIndexChanged.connect(self._gate_mode)
        self._gate_mode()
        gate_row.addWidget(self.gate_mode)
        gate_row.addWidget(self.gate_db, 1)
        form.addRow("Tail gate (now)", gate_row)
        self.band_limit = QCheckBox("the model's, per category")
        self.band_limit.setToolTip("filter each new sample to its category's band, where its training sounds have "
                                   "energy: takes the network's rumble from under hats and claps, its hiss off basses")
        self.band_limit.setChecked(s.band_limit != 0)
        form.addRow("Band limits (now)", self.band_limit)
        outer.addWidget(net)

        row = QHBoxLayout()
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)
        self.saved_label = QLabel("")
        self.saved_label.setWordWrap(True)
        row.addWidget(self.save_button)
        row.addWidget(self.saved_label, 1)
        outer.addLayout(row)
        outer.addStretch(1)
        bridge.learned.connect(self._learned)
        bridge.saved.connect(lambda path: self.saved_label.setText(f"saved to {path}"))
        self.refresh_devices()

    # ------------------------------------------------------------------ devices

    def refresh_devices(self) -> None:
        s = self.bridge.settings
        wanted_audio = s.audio_device
        wanted_midi = s.midi_port
        self.audio.clear()
        self.audio.addItem(DEFAULT_AUDIO, None)
        try:
            for dev in output_devices():
                self.audio.addItem(dev.label(), dev.name)
        except AudioDeviceError as exc:
            self.audio.setToolTip(str(exc))
        self.midi.clear()
        self.midi.addItem(VIRTUAL_MIDI, None)
        try:
            for name in input_names():
                self.midi.addItem(name, name)
        except MidiPortError as exc:
            self.midi.setToolTip(str(exc))
        for box, wanted in ((self.audio, wanted_audio), (self.midi, wanted_midi)):
            if wanted:
                index = box.findData(wanted)
                if index < 0:
                    box.addItem(f"{wanted} (not present)", wanted)
                    index = box.count() - 1
                box.setCurrentIndex(index)

    def _gate_mode(self) -> None:
        self.gate_db.setEnabled(self.gate_mode.currentData() == "threshold")

    def tail_gate(self) -> float | None:
        """The tail gate setting the panel shows: None (the model's), 0 (off) or a threshold in dB."""
        mode = self.gate_mode.currentData()
        return None if mode == "model" else 0.0 if mode == "off" else float(self.gate_db.value())

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    # ------------------------------------------------------------------ MIDI learn

    def _learn(self, armed: bool) -> None:
        if not armed:
            self.bridge.cancel_learn()
            self.learn_state.setText("learn cancelled")
            return
        target = self.learn_target.currentData()
        if self.bridge.learn(target):
            self.learn_state.setText(f"waiting for a note or CC for {target}…")
        else:
            self.learn_button.setChecked(False)

    def _learned(self, binding: dict) -> None:
        self.learn_button.blockSignals(True)
        self.learn_button.setChecked(False)
        self.learn_button.blockSignals(False)
        self.learn_state.setText(f"{binding['target']} ← {binding['type']} {binding['number']} (save to keep it)")

    # ------------------------------------------------------------------ save

    def changes(self) -> dict[str, Any]:
        return {
            "folder": self.folder.text().strip(),
            "audio_device": self.audio.currentData(),
            "midi_port": self.midi.currentData(),
            "osc_port": self.osc_port.value(),
            "reply_port": self.reply_port.value() or None,
            "backend": self.backend.currentText(),
            "device": self.device.text().strip() or "auto",
            "pool_size": self.pool_size.value(),
            "tail_gate": self.tail_gate(),
            "band_limit": None if self.band_limit.isChecked() else 0,
        }

    def save(self) -> None:
        rack = self.bridge.rack
        if rack is not None:
            rack.config["behaviour"] = self.behaviour.currentData()
        before = self.bridge.settings.audio_device
        changes = self.changes()
        if self.bridge.save(changes) is not None and changes["audio_device"] != before:
            self.bridge.reopen_audio(changes["audio_device"])
