"""The main window: pads on the left, generation and settings tabs on the right, history below, and a
status bar (model, backend, OSC endpoint, MIDI, audio, last error). Dropping an audio file on the
window asks for variations of it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QLabel, QMainWindow, QSplitter, QStatusBar, QTabWidget

from companion.config.version import VERSION
from gui.bridge import Bridge
from gui.controls import GenerationPanel
from gui.history import HistoryPanel
from gui.pad_grid import PadGrid
from gui.settings_panel import SettingsPanel

AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3")
STYLE = """
QMainWindow, QWidget { background: #1b1d20; color: #e0e0e0; }
QGroupBox { border: 1px solid #33363b; border-radius: 6px; margin-top: 14px; padding-top: 6px; }
QGroupBox::title { subcontrol-origin: margin; left: 8px; color: #9aa0a6; }
QPushButton { background: #2d3136; border: 1px solid #454a50; border-radius: 4px; padding: 4px 10px; }
QPushButton:checked { background: #7a2e2e; }
QComboBox, QSpinBox, QDoubleSpinBox, QLineEdit, QTreeWidget { background: #25282c; border: 1px solid #3a3e44; }
QLabel#error { color: #ff7b72; }
"""


class MainWindow(QMainWindow):
    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge
        self.setWindowTitle(f"DD Companion {VERSION}")
        self.setStyleSheet(STYLE)
        self.setAcceptDrops(True)
        self.pads = PadGrid(bridge)
        self.controls = GenerationPanel(bridge)
        self.settings_panel = SettingsPanel(bridge)
        self.history = HistoryPanel(bridge)
        tabs = QTabWidget()
        tabs.addTab(self.controls, "Generate")
        tabs.addTab(self.settings_panel, "Settings")
        self.tabs = tabs
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.pads)
        top.addWidget(tabs)
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 2)
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(top)
        main.addWidget(self.history)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 1)
        self.setCentralWidget(main)
        self._build_status_bar()
        bridge.status_changed.connect(self.show_status)
        bridge.error.connect(self.show_error)
        self.show_status(bridge.status())
        if bridge.errors:
            self.show_error(bridge.errors[-1])
        self.resize(1180, 780)

    def _build_status_bar(self) -> None:
        bar = QStatusBar()
        self.status_labels: dict[str, QLabel] = {}
        for key in ("model", "osc", "midi", "audio"):
            lab = QLabel("…")
            lab.setObjectName(key)
            bar.addPermanentWidget(lab)
            self.status_labels[key] = lab
        self.error_label = QLabel("")
        self.error_label.setObjectName("error")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bar.addWidget(self.error_label, 1)
        self.setStatusBar(bar)

    def show_status(self, status: dict) -> None:
        labels = self.status_labels
        if "model" in status:
            busy = f" · {status['engine']}" + (f" ({status['queued']} queued)" if status.get("queued") else "")
            labels["model"].setText(f"{status['model']} · {status['runtime']}{busy}")
            self.setWindowTitle(f"DD Companion {VERSION} · {status['model']} on {status['runtime']}")
            query = status.get("oscquery", "off")
            labels["osc"].setText(f"OSC {status['osc']}" + (f" · OSCQuery {query}" if query != "off" else ""))
            labels["midi"].setText(f"MIDI {status['midi']}")
            audio = status["audio"] + (f" · {status['underruns']} underruns" if status.get("underruns") else "")
            labels["audio"].setText(audio)

    def show_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.setToolTip(message)

    # ------------------------------------------------------------------ a dropped file asks for variations

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt's name)
        if self._dropped_audio(event.mimeData()) is not None and event.source() is None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        path = self._dropped_audio(event.mimeData())
        if path is not None:
            self.controls.vary(path)
            event.acceptProposedAction()

    @staticmethod
    def _dropped_audio(mime: object) -> Path | None:
        urls = mime.urls() if mime is not None and mime.hasUrls() else []  # type: ignore[attr-defined]
        for url in urls:
            path = Path(url.toLocalFile())
            if url.isLocalFile() and path.suffix.lower() in AUDIO_SUFFIXES:
                return path
        return None

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.bridge.stop()
        super().closeEvent(event)

