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
from collections.abc import Sequence
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
    writer has finished every submitted write).

    Every sink is built as ``Sink(path, cine, bw, annotated, stats)``: where it writes (inside the staged result set),
    the cine, the :class:`BackgroundWriter` heavy encoding goes to, the annotated frames and the timings to add to;
    ``file_name`` is its name in the result set. ``inference.yaml`` lists the sinks by output name."""

    needs_frames = False  # whether ``append`` reads the network-ready frames
    file_name = ""
    dicom_only = False  # written for a DICOM input only (skipped otherwise)

    def __init__(self, path: Path, cine: Cine, bw: BackgroundWriter, annotated: Sequence[int] = (),
                 stats: dict[str, float] | None = None) -> None:
        self.path, self.cine, self.bw, self.annotated = path, cine, bw, list(annotated)
        self.stats = stats if stats is not None else {}

    def append(self, win: Propagated) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output (called on success only: an unfinished result set is discarded as a whole)."""


class NiftiSink(Sink):
    file_name = "mask.nii.gz"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writer = NiftiWriter(self.path, self.cine.num_frames, self.cine.size, like=self.cine).__enter__()

    def append(self, win: Propagated) -> None:
        self.bw.submit(self.writer.append, win.labels, label="NIfTI (thread)")

    def close(self) -> None:
        self.writer.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        self.writer.__exit__(type(exc), exc, None)


class PngSink(Sink):
    file_name = "masks"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.names = self.cine.meta.get("frame_names") or [f"{t:04d}" for t in range(self.cine.num_frames)]

    def append(self, win: Propagated) -> None:
        n = len(win.labels)
        self.bw.submit(write_png_frames, self.path, win.labels, names=self.names[win.start : win.start + n],
                       label="PNG (thread)")


class OverlaySink(Sink):
    """The overlay video; its format follows the path's suffix (``overlay.mp4`` or ``overlay.gif``)."""

    needs_frames = True
    file_name = "overlay.mp4"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writer = VideoWriter(self.path, fps=self.cine.fps or 10.0).__enter__()

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

    file_name = "confidence.csv"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows: list[tuple] = []

    def append(self, win: Propagated) -> None:
        for k, present in enumerate(win.pixels):
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.labels = np.zeros((self.cine.num_frames, *self.cine.size), np.uint8)

    def append(self, win: Propagated) -> None:
        self.labels[win.start : win.start + len(win.labels)] = win.labels


class DicomSegSink(LabelsSink):
    """A DICOM SEG referencing the source DICOM cine (only for a DICOM input: the workflow skips it otherwise)."""

    file_name = "mask_seg.dcm"
    dicom_only = True

    def close(self) -> None:
        from medvos.io.dicom_seg import dicom_sources, write_dicom_seg

        t0 = time.perf_counter()
        write_dicom_seg(self.path, self.labels, dicom_sources(self.cine), annotated=self.annotated)
        self.stats["DICOM SEG"] = time.perf_counter() - t0


SINKS: dict[str, type[Sink]] = {"nifti": NiftiSink, "overlay": OverlaySink, "csv": CsvSink, "dicom_seg": DicomSegSink,
                                "png": PngSink}  # inference.yaml's `sinks` by default


def abort(sinks: Sequence[Any], exc: BaseException) -> None:
    """Release what the sinks hold open after a failure (their files are discarded with the result set)."""
    for s in sinks:
        if hasattr(s, "abort"):
            try:
                s.abort(exc)
            except Exception:  # noqa: BLE001 - the original error is what the caller must see
                pass
