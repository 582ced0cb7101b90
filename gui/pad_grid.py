"""The 4x4 pad grid: each pad shows its category, note, waveform and state; click plays, drag exports.

A pad is painted, not built from child widgets, so a grid of sixteen redraws cheaply when a sample
arrives. Left click plays the pad (as a MIDI hit at velocity 100); the context menu regenerates it,
varies it, locks its seed, auditions it or reveals its file; dragging it out hands the DAW or the file
manager the pad's WAV file from the watched folder (a ``text/uri-list`` drag, copy action).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, QRectF, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QDrag, QFont, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QApplication, QGridLayout, QMenu, QSizePolicy, QWidget

from gui.bridge import Bridge, PadView
from gui.waveform import paint_peaks, peaks
from models.errors import DDError

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
STATE_COLOURS = {
    "empty": QColor("#3a3d42"),
    "rendering": QColor("#b08a2e"),
    "ready": QColor("#2f8f5b"),
    "locked": QColor("#3a6fd1"),
    "error": QColor("#c0392b"),
}
FLASH_MS = 150


def note_name(note: int) -> str:
    """A note's name as Ableton's drum rack and Novation's pads name it (36 = C1, 60 = C3); other
    programs call 36 "C2", which is why the pad shows the number first."""
    return f"{NOTE_NAMES[note % 12]}{note // 12 - 2}"


def label(category: str | None) -> str:
    return (category or "any").replace("_", " ")


class PadWidget(QWidget):
    """One pad. Signals carry its note; the grid connects them to the bridge."""

    play_requested = Signal(int)
    action_requested = Signal(str, int)  # regenerate | variation | lock_seed, note

    def __init__(self, note: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.note = note
        self.view = PadView(note, None, "empty")
        self._peaks = None
        self._lit = False
        self._press: QPoint | None = None
        self.setMinimumSize(QSize(120, 92))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self._flash = QTimer(self, singleShot=True, interval=FLASH_MS)
        self._flash.timeout.connect(self._unlight)

    # ------------------------------------------------------------------ state

    def show_view(self, view: PadView) -> None:
        if view.path != self.view.path or (view.audio is None) != (self._peaks is None):
            self._peaks = peaks(view.audio, 96) if view.audio is not None else None
        self.view = view
        tip = f"{label(view.category)} — note {view.note} ({note_name(view.note)}) — {view.state}"
        if view.path is not None:
            tip += f"\n{view.path}\nseed {view.seed}"
        if view.error:
            tip += f"\n{view.error}"
        self.setToolTip(tip)
        self.update()

    @property
    def lit(self) -> bool:
        return self._lit

    def light(self) -> None:
        """Flash the pad (it was hit, from MIDI or the mouse)."""
        self._lit = True
        self._flash.start()
        self.update()

    def _unlight(self) -> None:
        self._lit = False
        self.update()

    def has_waveform(self) -> bool:
        return self._peaks is not None and bool(abs(self._peaks).max() > 0)

    # ------------------------------------------------------------------ drawing

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect()).adjusted(2, 2, -2, -2)
        base = QColor("#24272b") if not self._lit else QColor("#4a4f57")
        state = STATE_COLOURS.get(self.view.state, STATE_COLOURS["empty"])
        p.setPen(QPen(state, 3 if self.hasFocus() or self._lit else 2))
        p.setBrush(base)
        p.drawRoundedRect(r, 8, 8)
        title = QFont(self.font())
        title.setBold(True)
        p.setFont(title)
        p.setPen(QColor("#e8e8e8"))
        p.drawText(r.adjusted(8, 4, -8, 0), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
                   label(self.view.category))
        p.setFont(self.font())
        p.setPen(QColor("#9aa0a6"))
        p.drawText(r.adjusted(8, 4, -8, 0), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop,
                   f"{self.view.note} {note_name(self.view.note)}")
        wave = r.adjusted(8, 24, -8, -20)
        if self._peaks is not None:
            paint_peaks(p, wave, self._peaks, QColor("#8fd3ff") if self.view.state != "locked" else QColor("#9fb8ff"))
        else:
            p.setPen(QPen(QColor("#555a60"), 1, Qt.PenStyle.DashLine))
            p.drawLine(wave.left(), wave.center().y(), wave.right(), wave.center().y())
        p.setPen(state.lighter(140))
        footer = self.view.state if self.view.seed is None else f"{self.view.state} · seed {self.view.seed}"
        p.drawText(r.adjusted(8, 0, -8, -4), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom, footer)
        p.end()

    # ------------------------------------------------------------------ mouse: click plays, drag exports

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self._press = event.position().toPoint()
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._press is None or not event.buttons() & Qt.MouseButton.LeftButton:
            return
        if (event.position().toPoint() - self._press).manhattanLength() < QApplication.startDragDistance():
            return
        self._press = None
        self.start_drag()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton and self._press is not None:
            self._press = None
            self.play_requested.emit(self.note)
        super().mouseReleaseEvent(event)

    def mime_data(self) -> QMimeData | None:
        """The drag payload: the pad's WAV file as a file URL (None when the pad has no file yet)."""
        path = self.view.path
        if path is None or not Path(path).is_file():
            return None
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(Path(path).resolve()))])
        mime.setText(str(path))
        return mime

    def start_drag(self) -> Qt.DropAction | None:
        mime = self.mime_data()
        if mime is None:
            return None
        drag = QDrag(self)
        drag.setMimeData(mime)
        drag.setPixmap(self.grab().scaledToWidth(96, Qt.TransformationMode.SmoothTransformation))
        return drag.exec(Qt.DropAction.CopyAction)

    # ------------------------------------------------------------------ context menu

    def _menu(self, pos: QPoint) -> None:
        self.context_menu().popup(self.mapToGlobal(pos))

    def context_menu(self) -> QMenu:
        menu = QMenu(self)
        menu.addAction("Play", lambda: self.play_requested.emit(self.note))
        menu.addAction("Regenerate", lambda: self.action_requested.emit("regenerate", self.note))
        menu.addAction("Vary", lambda: self.action_requested.emit("variation", self.note))
        lock = menu.addAction("Unlock seed" if self.view.state == "locked" else "Lock seed",
                              lambda: self.action_requested.emit("lock_seed", self.note))
        lock.setEnabled(self.view.path is not None)
        reveal = menu.addAction("Reveal file", self.reveal)
        reveal.setEnabled(self.view.path is not None)
        return menu

    def reveal(self) -> None:
        if self.view.path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(self.view.path).parent)))


class PadGrid(QWidget):
    """The pads in rows of four, lowest note bottom-left as on hardware pad controllers."""

    def __init__(self, bridge: Bridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.pads: dict[int, PadWidget] = {}
        self._layout = QGridLayout(self)
        self._layout.setSpacing(6)
        self.rebuild()
        bridge.pad_changed.connect(self.refresh)
        bridge.pads_reset.connect(self.refresh_all)
        bridge.pad_played.connect(lambda note, _velocity: self._light(note))
        bridge.learned.connect(lambda binding: self.rebuild() if binding["target"].startswith("pad:") else None)

    def rebuild(self) -> None:
        """One widget per pad, in note order (MIDI learn may have moved a pad to another note)."""
        for pad in self.pads.values():
            self._layout.removeWidget(pad)
            pad.deleteLater()
        self.pads = {}
        notes = self.bridge.pad_notes()
        rows = max(1, (len(notes) + 3) // 4)
        for i, note in enumerate(notes):
            pad = PadWidget(note, self)
            pad.play_requested.connect(self._play)
            pad.action_requested.connect(self.bridge.pad_action)
            self._layout.addWidget(pad, rows - 1 - i // 4, i % 4)
            self.pads[note] = pad
        self.refresh_all()

    def _play(self, note: int) -> None:
        self.bridge.play_pad(note, 100)

    def _light(self, note: int) -> None:
        if note in self.pads:
            self.pads[note].light()

    def refresh(self, note: int) -> None:
        if note in self.pads:
            try:
                view = self.bridge.pad_view(note)
            except DDError:  # the pad moved to another note a moment ago; the rebuild follows
                return
            self.pads[note].show_view(view)

    def refresh_all(self) -> None:
        for note in self.pads:
            self.refresh(note)
