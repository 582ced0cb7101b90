"""Generation controls: model picker with metadata, category, sampler, steps, guidance, length, strength,
seed, count; Generate, Vary a file (or a file dropped on the window), Morph between two pads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from companion.engine.model_files import describe_file
from gui.bridge import Bridge, JobView
from gui.pad_grid import label
from models.config import MAX_GUIDANCE
from models.generate import MAX_SEED
from models.registry import installed_models
from models.samplers import SAMPLERS

ANY = "(any)"  # the category choice of an unconditional model
MODEL_CHOICE = "(model's choice)"  # the sampler and steps the model recommends, else the defaults
OPEN_FILE = "Open model file…"


def model_summary(info: dict[str, Any]) -> str:
    """One or two lines of a model's metadata for the picker's tooltip and the info line."""
    parts = [info.get("name", "?"), info.get("format", "")]
    if info.get("sample_rate"):
        parts.append(f"{info['sample_rate']} Hz")
    if info.get("seconds"):
        parts.append(f"{info['seconds']} s")
    text = " · ".join(p for p in parts if p)
    cats = info.get("categories") or []
    text += "\n" + (", ".join(cats) if cats else "unconditional")
    if info.get("notes"):
        text += "\n" + str(info["notes"])
    if info.get("error"):
        text += "\nerror: " + str(info["error"])
    return text


class GenerationPanel(QWidget):
    """See the module docstring. Emits :attr:`submitted` with the job id of each accepted request."""

    submitted = Signal(int)

    def __init__(self, bridge: Bridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        outer = QVBoxLayout(self)

        model_box = QGroupBox("Model")
        form = QFormLayout(model_box)
        self.model = QComboBox()
        self.model.setObjectName("model")
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Model", self.model)
        form.addRow(self.model_info)
        outer.addWidget(model_box)

        gen_box = QGroupBox("Generate")
        form = QFormLayout(gen_box)
        self.category = QComboBox()
        self.sampler = QComboBox()
        self.sampler.addItem(MODEL_CHOICE, None)
        for name in sorted(SAMPLERS):
            self.sampler.addItem(name, name)
        self.steps = QSpinBox(minimum=0, maximum=1000, specialValueText="model's / sampler's")
        guidance_row = QHBoxLayout()  # "default" shows the guidance in effect and sends none of its own
        self.default_guidance = QCheckBox("default", checked=True)
        self.default_guidance.setToolTip("the companion's guidance setting (--guidance, /dd/set guidance), "
                                         "else the loaded model's recommendation")
        self.guidance = QDoubleSpinBox(minimum=1.0, maximum=MAX_GUIDANCE, singleStep=0.5, decimals=2, enabled=False)
        self.guidance.setToolTip("classifier-free guidance: 1 = none; higher = more typical of the category, "
                                 "at twice the compute per guided step (not used by morphs)")
        self.default_guidance.toggled.connect(self._guidance_default)
        guidance_row.addWidget(self.default_guidance)
        guidance_row.addWidget(self.guidance, 1)
        self.seconds = QDoubleSpinBox(minimum=0.0, maximum=60.0, singleStep=0.05, decimals=2, specialValueText="model's",
                                      suffix=" s")
        self.strength = QDoubleSpinBox(minimum=0.01, maximum=1.0, singleStep=0.05, decimals=2, value=0.5)
        seed_row = QHBoxLayout()
        self.random_seed = QCheckBox("random", checked=True)
        self.seed = QSpinBox(minimum=0, maximum=min(MAX_SEED, 2**31 - 1), enabled=False)
        self.random_seed.toggled.connect(lambda on: self.seed.setEnabled(not on))
        seed_row.addWidget(self.random_seed)
        seed_row.addWidget(self.seed, 1)
        self.count = QSpinBox(minimum=1, maximum=64, value=1)
        form.addRow("Category", self.category)
        form.addRow("Sampler", self.sampler)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", guidance_row)
        form.addRow("Length", self.seconds)
        form.addRow("Variation strength", self.strength)
        form.addRow("Seed", seed_row)
        form.addRow("Count", self.count)
        buttons = QHBoxLayout()
        self.generate_button = QPushButton("Generate")
        self.generate_button.clicked.connect(self.generate)
        self.vary_button = QPushButton("Vary a file…")
        self.vary_button.clicked.connect(self.choose_variation_source)
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.vary_button)
        form.addRow(buttons)
        outer.addWidget(gen_box)

        morph_box = QGroupBox("Morph between two pads")
        form = QFormLayout(morph_box)
        self.morph_a, self.morph_b = QComboBox(), QComboBox()
        self.frames = QSpinBox(minimum=2, maximum=64, value=8)
        self.morph_button = QPushButton("Morph")
        self.morph_button.clicked.connect(self.morph)
        form.addRow("From pad", self.morph_a)
        form.addRow("To pad", self.morph_b)
        form.addRow("Files", self.frames)
        form.addRow(self.morph_button)
        outer.addWidget(morph_box)
        outer.addStretch(1)

        for note in bridge.pad_notes():
            view = bridge.pad_view(note)
            for box in (self.morph_a, self.morph_b):
                box.addItem(f"{note} {label(view.category)}", note)
        if self.morph_b.count() > 1:
            self.morph_b.setCurrentIndex(1)
        self._models: list[dict[str, Any]] = []
        self.refresh_models()
        self.model.activated.connect(self._model_chosen)
        bridge.model_changed.connect(lambda _facts: self.refresh_models())
        bridge.job_changed.connect(self._load_failed)
        bridge.status_changed.connect(self._status)

    def _load_failed(self, view: JobView) -> None:
        if view.kind == "load" and view.event == "error":
            self.refresh_models()  # back to the model still loaded (the error is in the status bar)

    # ------------------------------------------------------------------ model

    def refresh_models(self) -> None:
        """Fill the picker with the installed models, the loaded one selected, and its categories."""
        facts = self.bridge.model()
        self._models = []
        for path in installed_models():
            try:
                self._models.append(describe_file(path))
            except Exception as exc:  # a broken file in the user's folder must not break the window
                self._models.append({"name": path.name, "path": str(path), "error": str(exc)})
        loaded = facts.name if facts else ""
        self.model.blockSignals(True)
        self.model.clear()
        for info in self._models:
            self.model.addItem(info["name"], info["path"])
            self.model.setItemData(self.model.count() - 1, model_summary(info), Qt.ItemDataRole.ToolTipRole)
        if facts is not None and not any(info["name"] == loaded for info in self._models):
            self.model.addItem(loaded, None)
        self.model.addItem(OPEN_FILE, "open")
        index = next((i for i in range(self.model.count()) if self.model.itemText(i) == loaded), 0)
        self.model.setCurrentIndex(index)
        self.model.blockSignals(False)
        if facts is not None:
            self.model_info.setText(f"{facts.name} on {facts.runtime} · {facts.sample_rate} Hz · "
                                    f"{facts.seconds:.2f} s\n{', '.join(facts.categories) or 'unconditional'}")
        current = self.category.currentText()
        self.category.clear()
        self.category.addItems(list(facts.categories) if facts and facts.categories else [ANY])
        if current:
            self.category.setCurrentText(current)
        self.refresh_guidance()

    # ------------------------------------------------------------------ guidance

    def refresh_guidance(self) -> None:
        """An unconditional model has nothing to guide: the row stays on "default" (1); otherwise "default"
        shows the guidance in effect (the companion's setting, else the model's recommendation)."""
        facts = self.bridge.model()
        guidable = facts is not None and bool(facts.categories)
        if not guidable:
            self.default_guidance.setChecked(True)
        self.default_guidance.setEnabled(guidable)
        if self.default_guidance.isChecked():
            self.guidance.setValue(float(self.bridge.param("guidance")))

    def _guidance_default(self, on: bool) -> None:
        self.guidance.setEnabled(not on)
        if on:
            self.refresh_guidance()

    def _status(self, status: dict) -> None:
        if "guidance" in status and self.default_guidance.isChecked():  # e.g. /dd/set guidance from a DAW
            self.guidance.setValue(float(status["guidance"]))

    def _model_chosen(self, index: int) -> None:
        data = self.model.itemData(index)
        if data == "open":
            path, _ = QFileDialog.getOpenFileName(self, "Open a model", "",
                                                  "Models (*.safetensors *.ckpt *.pt *.pth *.onnx);;All files (*)")
            if not path:
                self.refresh_models()
                return
            data = path
        if data:
            self.load_model(data)

    def load_model(self, model: str | Path) -> int | None:
        self.model_info.setText(f"loading {Path(str(model)).name}…")
        job = self.bridge.load_model(model)
        if job is None:
            self.refresh_models()
        return job

    # ------------------------------------------------------------------ requests

    def options(self) -> dict[str, Any]:
        category = self.category.currentText()
        return {
            "category": None if category in ("", ANY) else category,
            "count": self.count.value(),
            "seed": None if self.random_seed.isChecked() else self.seed.value(),
            "sampler": self.sampler.currentData(),
            "steps": self.steps.value() or None,
            "guidance": None if self.default_guidance.isChecked() else self.guidance.value(),
        }

    def generate(self) -> int | None:
        opts = self.options()
        job = self.bridge.generate(opts.pop("category"), seconds=self.seconds.value() or None, **opts)
        if job is not None:
            self.submitted.emit(job)
        return job

    def choose_variation_source(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Vary a sound", "", "Audio (*.wav *.flac *.aif *.aiff *.ogg *.mp3)")
        if path:
            self.vary(path)

    def vary(self, source: str | Path) -> int | None:
        opts = self.options()
        job = self.bridge.vary(source, strength=self.strength.value(), **opts)
        if job is not None:
            self.submitted.emit(job)
        return job

    def morph(self) -> int | None:
        a = self.bridge.pad_view(self.morph_a.currentData())
        b = self.bridge.pad_view(self.morph_b.currentData())
        if a.path is None or b.path is None:
            self.bridge.report("morph: both pads need a sample first")
            return None
        job = self.bridge.morph(a.path, b.path, frames=self.frames.value(), steps=self.steps.value() or None)
        if job is not None:
            self.submitted.emit(job)
        return job
