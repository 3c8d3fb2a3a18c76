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
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from medvos.inference.predictor import VideoPredictor
from medvos.inference.propagator import FewShotPropagator
from medvos.inference.sinks import SINKS, LabelsSink, Sink, abort
from medvos.io.background import BackgroundWriter
from medvos.io.cine import Cine
from medvos.io.errors import CineReadError
from medvos.io.output_guard import check_outputs, input_files
from medvos.io.result_set import MANIFEST, ResultSet, sha256_file

logger = logging.getLogger(__name__)
OUTPUTS = tuple(SINKS)  # the built-in outputs (sinks)
MIN_SIDE = 8  # px: smaller frames cannot be segmented (nor encoded as an overlay video)


def run_inference(video: str | Sequence[str] | Cine, annotation: str | Sequence[str], output_dir: str | Path,
                  network: nn.Module, image_size: int = 256, clip_length: int = 8, fusion: str = "nearest",
                  outputs: Sequence[str] = OUTPUTS, overlay_format: str = "mp4", threshold: float = 0.5,
                  annotated: Sequence[int] | None = None, progress: bool = True, keep_labels: bool = True,
                  predictor: VideoPredictor | None = None, overwrite: bool = False,
                  sinks: Mapping[str, Callable[..., Sink]] | None = None,
                  checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Propagate the annotation of one or more frames of ``video`` to every frame and write the outputs.

    Streaming: the cine is decoded window by window (|B| = ``clip_length`` frames) in every input format, and only
    the annotated frames of the mask are kept; the predictor's windows go to the output sinks
    (:mod:`medvos.inference.sinks`), which write the NIfTI mask, PNG frames and the overlay video per window. Only
    ``keep_labels`` and the DICOM SEG output (a DICOM input) hold the label volume, 1 byte per pixel; nothing else
    grows with the video's length.

    Args:
        video: any cine :func:`medvos.io.read_cine` reads, or a :class:`Cine` already read (lazily).
        annotation: mask for the annotated frame(s): a full-length mask video whose non-empty frames are the
            annotations, or a partial frame folder named like the video's frames. Multi-label masks propagate
            every object (one label per pixel in the output).
        annotated: explicit annotated frame indices (overrides the rule above). An annotated frame on which an
            object is not drawn says the object is absent there (empty on that frame and, with ``nearest`` fusion,
            on the frames nearest to it); at least one annotated frame must show an object.
        predictor: the :class:`VideoPredictor` to segment with (``VideoPredictor.with_defaults``: the `inferring`
            defaults); default: single-path appearance, a :class:`FewShotPropagator` over ``network``.
        overwrite: allow outputs to replace input files (the cine, the annotation, masks in the output folder);
            otherwise such a run is refused before anything is written (:class:`OutputConflictError`).
        sinks: the available outputs, ``{name: Sink class or factory}`` (default :data:`medvos.inference.sinks.SINKS`;
            ``inference.yaml``'s ``sinks``); ``outputs`` chooses among them.
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
    sinks_by_name = dict(SINKS if sinks is None else sinks)
    unknown = set(outputs) - set(sinks_by_name)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)} (expected a subset of {tuple(sinks_by_name)})")
    predictor = predictor or VideoPredictor(
        lambda: FewShotPropagator(network, image_size, clip_length, threshold, fusion), clip_length)
    state = predictor.init_state(video)
    cine = state.cine
    ann = predictor.add_annotations(state, annotation, annotated)
    output_dir = Path(output_dir)
    if min(cine.size) < MIN_SIDE:
        raise CineReadError(cine.source, f"frames of {cine.size[0]}x{cine.size[1]} px are too small to segment "
                            f"(at least {MIN_SIDE}x{MIN_SIDE})")
    dicom = cine.format in ("dicom", "dicom-series")
    chosen = {k: (f"overlay.{overlay_format}" if k == "overlay" else getattr(sink, "file_name", "") or k)
              for k, sink in sinks_by_name.items()
              if k in outputs and (dicom or not getattr(sink, "dicom_only", False))}
    check_outputs([output_dir / n for k, n in chosen.items() if k != "png"] + [output_dir / MANIFEST] * bool(chosen),
                  [output_dir / "masks"] if "png" in chosen else [],
                  input_files(cine.meta.get("files") or cine.source, annotation), overwrite)
    result_set = ResultSet(output_dir, tuple(chosen.values()), {
        "input": {"video": _describe(cine.source if isinstance(video, Cine) else video),
                  "annotation": _describe(annotation), "annotated_frames": ann, "format": cine.format,
                  "frames": cine.num_frames, "size": list(cine.size)},
        "checkpoint": ({"path": str(checkpoint), "sha256": _checkpoint_sha256(checkpoint)}
                       if checkpoint is not None and Path(checkpoint).is_file() else None),
    }) if chosen else None
    # highdicom's first use in a process costs about 0.5 s: pay it in a thread while frames propagate, started once the
    # first window is out (after the test-time tunings, which it would only slow; the tuning's config parse no longer
    # minds a concurrent import: medvos.config_parsing)
    warm: Callable[[], None] | None = None
    if any(getattr(sinks_by_name[k], "dicom_only", False) for k in chosen):
        from medvos.io.dicom_seg import warm_up as warm
    network.eval()
    t_total = cine.num_frames
    conf = np.zeros(t_total, np.float32)
    drift = np.zeros(t_total, np.float32)
    objects: set[int] = set()
    with result_set or contextlib.nullcontext():
        dest = result_set.path if result_set is not None else output_dir.joinpath
        sinks: list[Sink] = []
        kept: LabelsSink | None = None
        bar = tqdm(total=t_total, desc="propagating", unit="frame", disable=not progress)
        t_loop = time.perf_counter()
        try:
            with BackgroundWriter(stats=timings) as bw:  # decoded ahead, written behind (threads)
                sinks = [sinks_by_name[k](dest(n), cine, bw, ann, timings) for k, n in chosen.items()]
                kept = LabelsSink(output_dir, cine, bw) if keep_labels else None
                frames_needed = any(s.needs_frames for s in sinks)
                for win in predictor.propagate(state, keep_frames=frames_needed, stats=timings):
                    if warm is not None:
                        threading.Thread(target=warm, name="medvos-highdicom", daemon=True).start()
                        warm = None
                    n = len(win.labels)
                    conf[win.start : win.start + n], drift[win.start : win.start + n] = win.confidence, win.drift
                    objects.update(*win.pixels)
                    for s in sinks + ([kept] if kept else []):
                        s.append(win)
                    bar.update(n)
            bar.close()
            timings["propagation loop"] = time.perf_counter() - t_loop
            for s in sinks:
                s.close()
        except BaseException as exc:
            bar.close()
            abort(sinks, exc)
            raise
    files = {k: output_dir / n for k, n in chosen.items()}
    values = sorted(objects)
    timings["total"] = time.perf_counter() - t_start
    logger.info("inference on %s: %d frames in %.2f s, annotated %s, outputs %s", cine.source, t_total,
                timings["total"], ann, {k: str(v) for k, v in files.items()})
    return {"labels": kept.labels if kept else None, "confidence": conf, "drift": drift, "annotated": ann,
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
