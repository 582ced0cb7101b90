"""The history and queue panel: running jobs with progress and cancel, finished samples with their recipe.

One top-level row per job (newest first), one child row per file it wrote. Double-clicking a file
(or a job with one file) auditions it through the audio output. The pads' own stock renders and the
pool's refills are hidden unless "show pad renders" is ticked: they are many and rarely interesting.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.bridge import Bridge, JobView

MAX_ROWS = 300
PATH_ROLE = Qt.ItemDataRole.UserRole
COLUMNS = ("Job", "Kind", "Category", "Progress", "Recipe", "")


class HistoryPanel(QWidget):
    def __init__(self, bridge: Bridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.show_pads = QCheckBox("show pad renders")
        self.cancel_all = QPushButton("Cancel all")
        self.cancel_all.clicked.connect(self._cancel_all)
        top.addWidget(self.show_pads)
        top.addStretch(1)
        top.addWidget(self.cancel_all)
        layout.addLayout(top)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        self.tree.itemDoubleClicked.connect(self._double_clicked)
        for column, width in enumerate((60, 80, 90, 120, 220)):
            self.tree.setColumnWidth(column, width)
        layout.addWidget(self.tree)
        self.rows: dict[int, QTreeWidgetItem] = {}
        self.bars: dict[int, QProgressBar] = {}
        bridge.job_changed.connect(self.on_job)

    def shown(self, view: JobView) -> bool:
        if view.kind == "refill":
            return False
        return view.origin != "midi" or self.show_pads.isChecked()

    def on_job(self, view: JobView) -> None:
        if not self.shown(view):
            return
        row = self.rows.get(view.id)
        if row is None:
            row = QTreeWidgetItem([str(view.id), view.kind, (view.category or "").replace("_", " "), "", view.recipe])
            self.tree.insertTopLevelItem(0, row)
            self.rows[view.id] = row
            bar = QProgressBar(maximum=1000)
            bar.setTextVisible(True)
            self.bars[view.id] = bar
            self.tree.setItemWidget(row, 3, bar)
            cancel = QPushButton("Cancel")
            cancel.clicked.connect(lambda _=False, job=view.id: self.bridge.cancel(job))
            self.tree.setItemWidget(row, 5, cancel)
            self._trim()
        bar = self.bars[view.id]
        if view.event == "progress":
            bar.setValue(int(view.fraction * 1000))
        elif view.event in ("done", "error"):
            self.tree.removeItemWidget(row, 5)
            self.tree.removeItemWidget(row, 3)
            del self.bars[view.id]
            if view.event == "error":
                row.setText(3, "cancelled" if view.error and "cancel" in view.error else "failed")
                row.setToolTip(3, view.error or "")
                row.setText(4, view.error or "")
            else:
                row.setText(3, f"done · {len(view.paths)} file(s)" if view.paths else "done")
                for path, seed in zip(view.paths, view.seeds or (None,) * len(view.paths), strict=False):
                    child = QTreeWidgetItem(["", "", "", Path(path).name, f"seed {seed}" if seed is not None else ""])
                    child.setData(0, PATH_ROLE, str(path))
                    child.setToolTip(3, str(path))
                    row.addChild(child)
                if len(view.paths) == 1:
                    row.setData(0, PATH_ROLE, str(view.paths[0]))
                row.setExpanded(len(view.paths) <= 4)

    def _trim(self) -> None:
        while self.tree.topLevelItemCount() > MAX_ROWS:
            row = self.tree.takeTopLevelItem(self.tree.topLevelItemCount() - 1)
            job = int(row.text(0))
            self.rows.pop(job, None)
            self.bars.pop(job, None)

    def _double_clicked(self, item: QTreeWidgetItem, _column: int) -> None:
        path = item.data(0, PATH_ROLE)
        if path:
            self.bridge.audition(path)

    def _cancel_all(self) -> None:
        for job in list(self.bars):
            self.bridge.cancel(job)

    def files(self) -> list[str]:
        """Every finished file listed, newest job first."""
        out = []
        for i in range(self.tree.topLevelItemCount()):
            row = self.tree.topLevelItem(i)
            out += [row.child(j).data(0, PATH_ROLE) for j in range(row.childCount())]
        return out
