"""Output sinks of the `inferring` workflow: each takes the propagated windows in frame order (``append``) and
finishes its file (``close``). Heavy encoding runs behind the propagation on a :class:`BackgroundWriter`.

``nifti``      ``mask.nii.gz``: labels (x, y, t) with the input's geometry (its own affine for NIfTI input)
``png``        ``masks/``: one PNG per frame, pixel value = object label
``overlay``    ``overlay.mp4`` (or ``.gif``): frames with coloured objects and contours
``csv``        ``confidence.csv``: frame, annotated, confidence, drift, pixels per object
``dicom_seg``  ``mask_seg.dcm``: DICOM SEG referencing the source frames (DICOM input only)
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvos.inference.predictor import Propagated
from medvos.io.atomic import atomic_write_bytes
from medvos.io.background import BackgroundWriter
from medvos.io.cine import Cine
from medvos.io.palette import PALETTE
from medvos.io.writers import NiftiWriter, VideoWriter, write_png_frames


def overlay(frames: np.ndarray, labels: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """RGB ``(T,H,W,3)`` uint8 of ``frames (T,3,H,W)`` in [0,1] with objects filled and outlined.

    Only object pixels are blended (``(1 - alpha) * frame + alpha * colour``, then truncated to uint8)."""
    import cv2

    labels = np.asarray(labels)
    out = np.empty((*labels.shape, 3), np.uint8)
    for t in range(labels.shape[0]):
        frame = cv2.merge([np.clip(c * 255.0, 0, 255) for c in frames[t]]).astype(np.uint8) if frames.shape[1] == 3 \
            else np.repeat(np.clip(frames[t, 0] * 255.0, 0, 255).astype(np.uint8)[..., None], 3, -1)
        x, y, w, h = cv2.boundingRect((labels[t] > 0).astype(np.uint8))  # work inside the objects' box only
        if w and h:
            crop, sel = frame[y : y + h, x : x + w], labels[t][y : y + h, x : x + w]
            fg = sel > 0
            crop[fg] = ((1 - alpha) * crop[fg].astype(np.float32) + alpha * PALETTE[sel[fg] % len(PALETTE)]
                        ).astype(np.uint8)
            for v in np.flatnonzero(np.bincount(sel.ravel())[1:]) + 1:
                cnts, _ = cv2.findContours((sel == v).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE,
                                           offset=(x, y))
                cv2.drawContours(frame, cnts, -1, tuple(int(c) for c in PALETTE[v % len(PALETTE)]), 1)
        out[t] = frame
    return out


class Sink:
    """Receives every propagated window in frame order, then ``close()`` (after the last one, once the background
    writer has finished every submitted write)."""

    needs_frames = False  # whether ``append`` reads the network-ready frames

    def append(self, win: Propagated) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output (called on success only: an unfinished result set is discarded as a whole)."""


class NiftiSink(Sink):
    def __init__(self, path: Path, cine: Cine, bw: BackgroundWriter) -> None:
        self.writer = NiftiWriter(path, cine.num_frames, cine.size, like=cine).__enter__()
        self.bw = bw

    def append(self, win: Propagated) -> None:
        self.bw.submit(self.writer.append, win.labels, label="NIfTI (thread)")

    def close(self) -> None:
        self.writer.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        self.writer.__exit__(type(exc), exc, None)


class PngSink(Sink):
    def __init__(self, folder: Path, frame_names: Sequence[str], bw: BackgroundWriter) -> None:
        self.folder, self.names, self.bw = folder, list(frame_names), bw

    def append(self, win: Propagated) -> None:
        n = len(win.labels)
        self.bw.submit(write_png_frames, self.folder, win.labels, names=self.names[win.start : win.start + n],
                       label="PNG (thread)")


class OverlaySink(Sink):
    needs_frames = True

    def __init__(self, path: Path, fps: float, bw: BackgroundWriter) -> None:
        self.writer = VideoWriter(path, fps=fps).__enter__()
        self.bw = bw

    def append(self, win: Propagated) -> None:
        frames, labels = win.frames, win.labels
        self.bw.submit(lambda: self.writer.append(overlay(frames, labels)), label="overlay (thread)")

    def close(self) -> None:
        self.writer.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        self.writer.__exit__(type(exc), exc, None)


class CsvSink(Sink):
    """Per frame: annotated, confidence, drift and pixels per object (a few ints a frame, written at the end, when
    every object is known)."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, []

    def append(self, win: Propagated) -> None:
        for k, lab in enumerate(win.labels):
            counts = np.bincount(lab.ravel())
            present = {int(v): int(counts[v]) for v in np.flatnonzero(counts[1:]) + 1}
            self.rows.append((win.start + k, int(win.annotated[k]), float(win.confidence[k]), float(win.drift[k]),
                              present))

    def close(self) -> None:
        values = sorted({v for *_, present in self.rows for v in present})
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["frame", "annotated", "confidence", "drift"] + [f"pixels_label_{v}" for v in values])
        for t, a, c, d, counts in self.rows:
            w.writerow([t, a, f"{c:.4f}", f"{d:.4f}"] + [counts.get(v, 0) for v in values])
        atomic_write_bytes(self.path, buf.getvalue().encode())


class LabelsSink(Sink):
    """The whole label volume ``(T,H,W)`` uint8 in memory (1 byte per pixel): the caller's, or a DICOM SEG's."""

    def __init__(self, cine: Cine) -> None:
        self.labels = np.zeros((cine.num_frames, *cine.size), np.uint8)

    def append(self, win: Propagated) -> None:
        self.labels[win.start : win.start + len(win.labels)] = win.labels


class DicomSegSink(LabelsSink):
    def __init__(self, path: Path, cine: Cine, annotated: Sequence[int], stats: dict[str, float]) -> None:
        super().__init__(cine)
        self.path, self.cine, self.annotated, self.stats = path, cine, list(annotated), stats

    def close(self) -> None:
        from medvos.io.dicom_seg import dicom_sources, write_dicom_seg

        t0 = time.perf_counter()
        write_dicom_seg(self.path, self.labels, dicom_sources(self.cine), annotated=self.annotated)
        self.stats["DICOM SEG"] = time.perf_counter() - t0


FILE_NAMES = {"nifti": "mask.nii.gz", "png": "masks", "dicom_seg": "mask_seg.dcm", "csv": "confidence.csv"}


def file_name(output: str, overlay_format: str = "mp4") -> str:
    return f"overlay.{overlay_format}" if output == "overlay" else FILE_NAMES[output]


def make_sink(output: str, path: Path, cine: Cine, bw: BackgroundWriter, annotated: Sequence[int],
              stats: dict[str, float]) -> Sink:
    """The sink writing ``output`` (one of :data:`medvos.inference.workflow.OUTPUTS`) to ``path``."""
    makers: dict[str, Callable[[], Sink]] = {
        "nifti": lambda: NiftiSink(path, cine, bw),
        "png": lambda: PngSink(path, cine.meta.get("frame_names") or [f"{t:04d}" for t in range(cine.num_frames)],
                               bw),
        "overlay": lambda: OverlaySink(path, cine.fps or 10.0, bw),
        "csv": lambda: CsvSink(path),
        "dicom_seg": lambda: DicomSegSink(path, cine, annotated, stats),
    }
    return makers[output]()


def abort(sinks: Sequence[Any], exc: BaseException) -> None:
    """Release what the sinks hold open after a failure (their files are discarded with the result set)."""
    for s in sinks:
        if hasattr(s, "abort"):
            try:
                s.abort(exc)
            except Exception:  # noqa: BLE001 - the original error is what the caller must see
                pass
