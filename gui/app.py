"""Start the window: build the companion from the settings, start it behind the bridge, show the window.

``screenshot`` renders the main window offscreen to a PNG once every pad holds a freshly generated
sample (or ``wait`` seconds have passed), then exits: the tests use it, and docs/window.png was made with it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from gui.bridge import Bridge
from gui.window import MainWindow

log = logging.getLogger("dd.gui")


def application(offscreen: bool = False) -> QApplication:
    """The QApplication (created once); ``offscreen`` renders without a display."""
    if offscreen:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("DD Companion")
    app.setOrganizationName("dd-companion")
    return app  # type: ignore[return-value]


def report_unexpected_errors(bridge: Bridge) -> None:
    """An exception escaping a slot (a bug) becomes a readable message in the window, with its traceback
    in the log, instead of only a traceback on a terminal the user may not see."""

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        log.error("unexpected error in the window", exc_info=(kind, value, tb))
        bridge.report(f"unexpected error: {kind.__name__}: {value} (the log has the details)")

    sys.excepthook = hook


def pads_ready(bridge: Bridge) -> bool:
    """Every pad that can render shows a sample."""
    views = [bridge.pad_view(n) for n in bridge.pad_notes()]
    return bool(views) and all(v.path is not None for v in views if v.state != "error")


def when(predicate: Callable[[], bool], then: Callable[[bool], None], timeout_s: float, every_ms: int = 100) -> QTimer:
    """Poll ``predicate`` on the Qt event loop; call ``then(True)`` once it holds, ``then(False)`` at timeout."""
    timer = QTimer()
    left = [max(1, int(timeout_s * 1000 / every_ms))]

    def tick() -> None:
        left[0] -= 1
        ok = predicate()
        if ok or left[0] <= 0:
            timer.stop()
            then(ok)

    timer.timeout.connect(tick)
    timer.start(every_ms)
    return timer


def run(companion: Any, settings_file: Path | None = None, *, screenshot: Path | None = None,
        wait: float = 120.0, keep: dict[str, Any] | None = None) -> int:
    """Run the window on ``companion`` (a :class:`companion.service.resident.Companion`) until it closes."""
    app = application(offscreen=screenshot is not None)
    bridge = Bridge(companion, settings_file, keep=keep)
    report_unexpected_errors(bridge)
    bridge.start()
    window = MainWindow(bridge)
    window.show()
    if screenshot is None:
        code = app.exec()
        window.close()
        return code

    result = {"code": 0}

    def shoot(ready: bool) -> None:
        window.pads.refresh_all()
        app.processEvents()
        if not ready:
            log.warning("screenshot: not every pad had a sample after %.0f s", wait)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(str(screenshot)):
            print(f"dd-companion gui: error: cannot write screenshot '{screenshot}'", file=sys.stderr)
            result["code"] = 2
        else:
            print(f"dd-companion gui: screenshot saved to {screenshot}", flush=True)
        window.close()
        app.quit()

    keep = when(lambda: pads_ready(bridge), shoot, wait)  # noqa: F841 (the timer must stay referenced)
    app.exec()
    return result["code"]
