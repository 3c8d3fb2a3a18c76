"""The `inferring` workflow: a user's cine + annotated frame(s) -> masks for every frame in several formats.

Outputs (under ``output_dir``, each written atomically):
    ``mask.nii.gz``      labels (x, y, t) with the input's geometry (its own affine for NIfTI input)
    ``masks/``           one PNG per frame, pixel value = object label (0 = background)
    ``mask_seg.dcm``     DICOM SEG referencing the source frames (DICOM input only)
    ``overlay.mp4``      frames with coloured objects and contours (or ``.gif``)
    ``confidence.csv``   frame, annotated, confidence, drift (disagreement of appearance and motion), pixels per
                         object
    ``manifest.json``    the result set: every file with its sha256 and size, the input, the checkpoint, the version
                         (written last; a folder without it holds no complete result set)
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from medvos.data.transforms import intensity_range, scale_intensity
from medvos.inference.propagator import FewShotPropagator
from medvos.io.atomic import atomic_write_bytes
from medvos.io.background import BackgroundWriter, prefetch
from medvos.io.errors import CineReadError, MaskMismatchError
from medvos.io.output_guard import check_outputs, input_files
from medvos.io.palette import PALETTE
from medvos.io.readers import read_annotations, read_cine
from medvos.io.result_set import MANIFEST, ResultSet, sha256_file
from medvos.io.writers import NiftiWriter, VideoWriter, write_png_frames

logger = logging.getLogger(__name__)
OUTPUTS = ("nifti", "png", "dicom_seg", "overlay", "csv")
MIN_SIDE = 8  # px: smaller frames cannot be segmented (nor encoded as an overlay video)


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


def run_inference(video: str | Sequence[str], annotation: str | Sequence[str], output_dir: str | Path,
                  network: nn.Module, image_size: int = 256, window: int = 8, fusion: str = "nearest",
                  outputs: Sequence[str] = OUTPUTS, overlay_format: str = "mp4", threshold: float = 0.5,
                  annotated: Sequence[int] | None = None, progress: bool = True, keep_labels: bool = True,
                  propagator: FewShotPropagator | None = None, overwrite: bool = False,
                  checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Propagate the annotation of one or more frames of ``video`` to every frame and write the outputs.

    Streaming: the cine is decoded window by window (|B| = ``window`` frames) in every input format, and only the
    annotated frames of the mask are kept; the NIfTI mask, PNG frames, the overlay video and the CSV are written
    per window. Only ``keep_labels`` and the DICOM SEG output (a DICOM input) hold the label volume, 1 byte per
    pixel; nothing else grows with the video's length.

    Args:
        video: any cine :func:`medvos.io.read_cine` reads.
        annotation: mask for the annotated frame(s): a full-length mask video whose non-empty frames are the
            annotations, or a partial frame folder named like the video's frames. Multi-label masks propagate
            every object (one label per pixel in the output).
        annotated: explicit annotated frame indices (overrides the rule above). An annotated frame on which an
            object is not drawn says the object is absent there (empty on that frame and, with ``nearest`` fusion,
            on the frames nearest to it); at least one annotated frame must show an object.
        propagator: a configured propagator (for example :class:`MemoryTreePropagator`); default: a
            :class:`FewShotPropagator` over ``network``.
        overwrite: allow outputs to replace input files (the cine, the annotation, masks in the output folder);
            otherwise such a run is refused before anything is written (:class:`OutputConflictError`).
        checkpoint: the model file, recorded (path and sha256) in the result set's ``manifest.json``.

    The outputs form one result set (:class:`medvos.io.result_set.ResultSet`): written into a staging folder and
    moved into ``output_dir`` together with ``manifest.json`` only when every frame was propagated and every writer
    closed; a run that fails (bad pixels in a late frame, a full disk) or is killed leaves no output under a final
    name.

    Returns:
        ``{"labels": (T,H,W) uint8 or None, "confidence": (T,), "drift": (T,) (0 without motion), "annotated": [...],
        "objects": [...], "files": {name: path}, "timings": {stage: seconds}}`` (the background threads' stages are
        their busy time, which overlaps the propagation loop).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}  # seconds per stage (background threads' busy time included)
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)} (expected a subset of {OUTPUTS})")
    cine = read_cine(video, min_frames=2, lazy=True)
    given = read_annotations(annotation, cine, annotated or None)
    ann = sorted(given)
    if not ann:
        raise MaskMismatchError(str(annotation), "no annotated frame: the mask is empty on every frame")
    if not any(given[a].any() for a in ann):
        raise MaskMismatchError(str(annotation), f"annotated frame(s) {ann} are empty: draw the object on at least "
                                "one (an annotated frame without an object says it is absent there)")
    output_dir = Path(output_dir)
    seg = "dicom_seg" in outputs and cine.format in ("dicom", "dicom-series")
    if min(cine.size) < MIN_SIDE:
        raise CineReadError(cine.source, f"frames of {cine.size[0]}x{cine.size[1]} px are too small to segment "
                            f"(at least {MIN_SIDE}x{MIN_SIDE})")
    names = {"nifti": "mask.nii.gz", "overlay": f"overlay.{overlay_format}", "csv": "confidence.csv",
             "dicom_seg": "mask_seg.dcm", "png": "masks"}
    chosen = {k: n for k, n in names.items() if k in outputs and (k != "dicom_seg" or seg)}
    check_outputs([output_dir / n for k, n in chosen.items() if k != "png"] + [output_dir / MANIFEST] * bool(chosen),
                  [output_dir / "masks"] if "png" in chosen else [],
                  input_files(cine.meta.get("files") or cine.source, annotation), overwrite)
    result_set = ResultSet(output_dir, tuple(chosen.values()), {
        "input": {"video": _describe(video), "annotation": _describe(annotation), "annotated_frames": ann,
                  "format": cine.format, "frames": cine.num_frames, "size": list(cine.size)},
        "checkpoint": ({"path": str(checkpoint), "sha256": _checkpoint_sha256(checkpoint)}
                       if checkpoint is not None and Path(checkpoint).is_file() else None),
    }) if chosen else None
    if seg:  # highdicom's first use in a process costs ~0.5 s: pay it while frames propagate
        import threading

        from medvos.io.dicom_seg import warm_up

        threading.Thread(target=warm_up, name="medvos-highdicom", daemon=True).start()
    intensity = intensity_range(cine.frames)

    def prepare(frames: np.ndarray) -> np.ndarray:
        x = scale_intensity(frames, intensity)
        return np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x

    shown: dict[int, np.ndarray] = {}  # prepared frames awaiting the overlay (a propagator may output late)

    def windows() -> Any:
        for start in range(0, t_total, window):
            x = prepare(cine.frames[start : start + window])
            if "overlay" in outputs:
                shown.update({start + i: f for i, f in enumerate(x)})
            yield start, torch.from_numpy(x)

    network.eval()
    prop = propagator or FewShotPropagator(network, image_size, window, threshold, fusion)
    supports = prop.supports({a: (torch.from_numpy(prepare(cine.frames[a : a + 1]))[0],
                                  torch.from_numpy(given[a])) for a in ann})
    t_total = cine.num_frames
    out = np.zeros((t_total, *cine.size), np.uint8) if keep_labels or seg else None
    conf = np.zeros(t_total, np.float32)
    drift = np.zeros(t_total, np.float32)
    frame_names = cine.meta.get("frame_names") or [f"{t:04d}" for t in range(t_total)]
    rows, objects = [], set()
    with result_set or contextlib.nullcontext():
        dest = result_set.path if result_set is not None else output_dir.joinpath
        video_out = VideoWriter(dest(chosen["overlay"]), fps=cine.fps or 10.0) if "overlay" in chosen else None
        nifti_out = NiftiWriter(dest(chosen["nifti"]), t_total, cine.size, like=cine) if "nifti" in chosen else None
        bar = tqdm(total=t_total, desc="propagating", unit="frame", disable=not progress)
        t_loop = time.perf_counter()
        with video_out or contextlib.nullcontext(), nifti_out or contextlib.nullcontext(), \
                BackgroundWriter(stats=timings) as bw:
            windows_ahead = prefetch(windows(), stats=timings, label="decode + intensity (thread)")
            for win in prop.stream(windows_ahead, supports):  # decoded ahead, written behind (threads)
                start, lab, c, n = win.start, win.labels, win.confidence, len(win.labels)
                if win.drift is not None:
                    drift[start : start + n] = win.drift
                for t in range(start, start + n):  # annotated frames keep the given labels
                    if t in ann:
                        lab[t - start], c[t - start], drift[t] = given[t], 1.0, 0.0
                conf[start : start + n] = c
                if out is not None:
                    out[start : start + n] = lab
                if nifti_out is not None:
                    bw.submit(nifti_out.append, lab, label="NIfTI (thread)")
                if "png" in chosen:
                    bw.submit(write_png_frames, dest("masks"), lab, names=frame_names[start : start + n],
                              label="PNG (thread)")
                if video_out is not None:
                    shown_now = np.stack([shown.pop(t) for t in range(start, start + n)])
                    bw.submit(lambda v=shown_now, lb=lab: video_out.append(overlay(v, lb)), label="overlay (thread)")
                for t in range(start, start + n):
                    counts = np.bincount(lab[t - start].ravel())
                    present = {int(v): int(counts[v]) for v in np.flatnonzero(counts[1:]) + 1}
                    objects |= set(present)
                    rows.append((t, int(t in ann), float(conf[t]), present))  # a few ints a frame
                bar.update(n)
        bar.close()
        timings["propagation loop"] = time.perf_counter() - t_loop
        values = sorted(int(v) for v in objects)
        if seg:
            from medvos.io.dicom_seg import dicom_sources, write_dicom_seg

            t0 = time.perf_counter()
            write_dicom_seg(dest(chosen["dicom_seg"]), out, dicom_sources(cine), annotated=ann)
            timings["DICOM SEG"] = time.perf_counter() - t0
        if "csv" in chosen:
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["frame", "annotated", "confidence", "drift"] + [f"pixels_label_{v}" for v in values])
            for t, a, c, counts in rows:
                w.writerow([t, a, f"{c:.4f}", f"{drift[t]:.4f}"] + [counts.get(v, 0) for v in values])
            atomic_write_bytes(dest(chosen["csv"]), buf.getvalue().encode())
    files = {k: output_dir / n for k, n in chosen.items()}
    timings["total"] = time.perf_counter() - t_start
    logger.info("inference on %s: %d frames in %.2f s, annotated %s, outputs %s", cine.source, t_total,
                timings["total"], ann, {k: str(v) for k, v in files.items()})
    return {"labels": out if keep_labels else None, "confidence": conf, "drift": drift, "annotated": ann,
            "objects": values, "files": files, "timings": timings}


def _checkpoint_sha256(path: str | Path) -> str:
    """The checkpoint's sha256: its record (metadata.json or the ``.sha256`` sidecar, which loading the model already
    checked the file against), else computed."""
    from medvos.networks.checkpoint import recorded_sha256

    recorded = recorded_sha256(path)
    return recorded[0] if recorded else sha256_file(path)


def _describe(source: str | Sequence[str]) -> str | list[str]:
    """An input as the manifest records it: the resolved path, or the list of frame files."""
    return str(Path(source).resolve()) if isinstance(source, (str, Path)) else [str(Path(s).resolve()) for s in source]


def default_example(datalist_path: str) -> tuple[str, str]:
    """The first test cine of a datalist and its mask (its non-empty first frame is the annotation)."""
    from medvos.data.datalist import load_datalist

    entry = load_datalist(datalist_path, "test")[0]
    return entry["image"], entry["label"]
