"""Waveform thumbnails: min/max peaks per pixel column, and a painter that draws them.

``peaks`` is plain NumPy (tested without Qt); ``paint_peaks`` draws a mirrored envelope the way
sample browsers do, one vertical line per column from the column's minimum to its maximum.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF


def peaks(audio: np.ndarray, columns: int) -> np.ndarray:
    """``[columns, 2]`` (min, max) of ``audio`` (``[frames]`` or ``[frames, channels]``, channels
    mixed to their mean) over equal slices of its frames; zeros for an empty sound."""
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    mono = np.asarray(audio, dtype=np.float32)
    if mono.ndim == 2:
        mono = mono.mean(axis=1)
    if mono.ndim != 1:
        raise ValueError(f"audio must be [frames] or [frames, channels], got shape {np.shape(audio)}")
    out = np.zeros((columns, 2), dtype=np.float32)
    if mono.size == 0:
        return out
    edges = np.linspace(0, mono.size, columns + 1).astype(np.int64)
    for i in range(columns):
        lo, hi = edges[i], max(edges[i + 1], edges[i] + 1)
        chunk = mono[lo:min(hi, mono.size)]
        if chunk.size:
            out[i] = chunk.min(), chunk.max()
    return np.clip(out, -1.0, 1.0)


def paint_peaks(painter: QPainter, rect: QRectF, table: np.ndarray, color: QColor) -> None:
    """Draw ``table`` (from :func:`peaks`) filling ``rect``: a filled envelope around the centre line."""
    if len(table) == 0:
        return
    mid, half = rect.center().y(), rect.height() / 2.0
    step = rect.width() / len(table)
    top = [QPointF(rect.left() + (i + 0.5) * step, mid - float(hi) * half) for i, (_, hi) in enumerate(table)]
    bottom = [QPointF(rect.left() + (i + 0.5) * step, mid - float(lo) * half) for i, (lo, _) in enumerate(table)]
    painter.save()
    painter.setPen(QPen(color, 1.0))
    painter.setBrush(color)
    painter.drawPolygon(QPolygonF(top + bottom[::-1]))
    painter.restore()
