"""Batch inference over an archive: every cine of a datalist split or a folder, resumable and sharded.

- **Cases**: a datalist split (each entry's ``image``, ``label`` and ``labeled_frames``), or a folder of cines with
  a folder of annotations matched by name (``<cine stem>`` + any mask suffix, e.g. ``echo01.dcm`` and
  ``echo01.nii.gz`` or ``echo01/`` of PNGs).
- **Resumable**: each case writes a result set into ``<batch_dir>/<case id>/`` (:mod:`medvos.io.result_set`); a case
  whose manifest verifies (every file present with its sha256) and names the same input is skipped, so a killed
  run continues where it stopped.
- **Sharded**: under ``torchrun`` rank r takes cases r, r + world, ...; each rank records its cases in
  ``<batch_dir>/.ranks/rank<r>.json`` and rank 0 writes one ``summary.json`` and ``summary.csv`` once all are done.
  A case that fails (an unreadable file) is recorded with its error and the run goes on; the command then ends with
  :class:`BatchIncomplete` naming the failed cases (running it again retries only those).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from medvos.inference.predictor import VideoPredictor
from medvos.io.atomic import atomic_write_bytes
from medvos.io.errors import CineReadError
from medvos.io.formats import IMAGE_SUFFIXES, ITK_SUFFIXES, NIFTI_SUFFIXES, VIDEO_SUFFIXES, file_suffix
from medvos.io.result_set import read_manifest, verify

logger = logging.getLogger(__name__)
CINE_SUFFIXES = (".dcm", *NIFTI_SUFFIXES, *ITK_SUFFIXES, *VIDEO_SUFFIXES)


@dataclass
class Case:
    """One cine to segment: its id (the output folder's name), files and annotated frames (None: from the mask)."""

    id: str
    video: str | list[str]
    annotation: str | list[str]
    annotated: list[int] | None = None


@dataclass
class CaseResult:
    id: str
    status: str  # done | skipped (finished earlier) | failed
    seconds: float = 0.0
    frames: int = 0
    error: str = ""
    outputs: list[str] = field(default_factory=list)


def _case_id(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._") or "case"


def cases_from_datalist(path: str | Path, split: str = "test") -> list[Case]:
    """The video entries of a datalist split (images are left out)."""
    from medvos.data.datalist import load_datalist
    from medvos.data.videos import is_image_entry

    out = []
    for e in load_datalist(path, split):
        if is_image_entry(e):
            continue
        frames = e.get("labeled_frames")
        annotated = [int(frames[0])] if isinstance(frames, list) and frames else ([0] if frames == "all" else None)
        out.append(Case(_case_id(str(e.get("id", Path(str(e["image"])).stem))), e["image"], e["label"], annotated))
    if not out:
        raise CineReadError(path, f"no video entry in split {split!r}")
    return out


def _stem(path: Path) -> str:
    suffix = file_suffix(path)
    return path.name[: -len(suffix)] if suffix and path.is_file() else path.name


def cases_from_folder(cines: str | Path, annotations: str | Path) -> list[Case]:
    """Each cine in ``cines`` (a file in a supported format, or a sub-folder of frames or DICOM files) with the
    annotation of the same name in ``annotations``; a cine without one is an error naming it."""
    cines, annotations = Path(cines), Path(annotations)
    for folder in (cines, annotations):
        if not folder.is_dir():
            raise CineReadError(folder, "folder not found")
    masks = {_stem(p): p for p in annotations.iterdir() if not p.name.startswith(".")}
    out, missing = [], []
    for p in sorted(cines.iterdir()):
        if p.name.startswith(".") or (p.is_file() and file_suffix(p) not in CINE_SUFFIXES + IMAGE_SUFFIXES):
            continue
        stem = _stem(p)
        if stem not in masks:
            missing.append(p.name)
            continue
        out.append(Case(_case_id(stem), str(p), str(masks[stem])))
    if missing:
        raise CineReadError(annotations, f"no annotation named like the cine(s) {missing[:5]}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if not out:
        raise CineReadError(cines, "holds no cine")
    return out


def finished(case: Case, folder: Path) -> bool:
    """Whether ``folder`` holds a whole result set of this case (manifest verifies, same input files)."""
    manifest = read_manifest(folder)
    if manifest is None or verify(folder):
        return False

    def resolved(p: str | list[str]) -> Any:
        return str(Path(p).resolve()) if isinstance(p, (str, Path)) else [str(Path(x).resolve()) for x in p]

    given = manifest.get("input", {})
    return given.get("video") == resolved(case.video) and given.get("annotation") == resolved(case.annotation)


def shard(cases: Sequence[Case], rank: int, world: int) -> list[Case]:
    return list(cases[rank::world])


def run_batch(cases: Sequence[Case], batch_dir: str | Path, network: nn.Module, image_size: int, clip_length: int,
              predictor: VideoPredictor, outputs: Sequence[str] = ("nifti", "png", "csv"),
              overlay_format: str = "mp4", resume: bool = True, checkpoint: str | Path | None = None,
              progress: bool = True) -> dict[str, Any] | None:
    """Segment every case (this rank's share under ``torchrun``) into ``<batch_dir>/<id>/``; returns the summary on
    rank 0 (None on the others).

    Args:
        predictor: segments each case (each video's state is its own).
        resume: skip cases whose result set is already whole.
    """
    import torch.distributed as dist

    from medvos.inference.workflow import run_inference

    batch_dir = Path(batch_dir)
    ids = [c.id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"case ids must be unique (output folders): {dupes[:5]}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world > 1
    joined = distributed and not dist.is_initialized()
    if joined:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    mine = shard(cases, rank, world)
    results: list[CaseResult] = []
    for case in tqdm(mine, desc=f"cases (rank {rank})" if distributed else "cases", unit="cine",
                     disable=not progress):
        folder = batch_dir / case.id
        if resume and finished(case, folder):
            results.append(CaseResult(case.id, "skipped", outputs=sorted(read_manifest(folder)["files"])))
            continue
        t0 = time.perf_counter()
        try:
            res = run_inference(case.video, case.annotation, folder, network, image_size, clip_length,
                                outputs=outputs, overlay_format=overlay_format, annotated=case.annotated,
                                progress=False, keep_labels=False, predictor=predictor,
                                checkpoint=checkpoint)
        except (CineReadError, OSError, ValueError) as exc:  # one bad case never stops an archive run
            logger.warning("case %s failed: %s", case.id, exc)
            results.append(CaseResult(case.id, "failed", time.perf_counter() - t0, error=f"{type(exc).__name__}: "
                                      f"{exc}"))
            continue
        results.append(CaseResult(case.id, "done", time.perf_counter() - t0, len(res["confidence"]),
                                  outputs=sorted(str(p.relative_to(batch_dir)) for p in res["files"].values())))
    ranks = batch_dir / ".ranks"
    atomic_write_bytes(ranks / f"rank{rank}.json", json.dumps([asdict(r) for r in results]).encode())
    if distributed:
        dist.barrier()
        if joined:
            dist.destroy_process_group()
    if rank != 0:
        return None
    merged = [r for k in range(world) for r in json.loads((ranks / f"rank{k}.json").read_text())]
    order = {c.id: i for i, c in enumerate(cases)}
    merged.sort(key=lambda r: order.get(r["id"], len(order)))
    counts = {s: sum(r["status"] == s for r in merged) for s in ("done", "skipped", "failed")}
    summary = {"cases": len(cases), **counts, "processes": world,
               "seconds": round(sum(r["seconds"] for r in merged), 2),
               "frames": sum(r["frames"] for r in merged), "results": merged}
    atomic_write_bytes(batch_dir / "summary.json", json.dumps(summary, indent=1).encode())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "status", "seconds", "frames", "error"])
    for r in merged:
        w.writerow([r["id"], r["status"], f"{r['seconds']:.2f}", r["frames"], r["error"]])
    atomic_write_bytes(batch_dir / "summary.csv", buf.getvalue().encode())
    logger.info("batch: %d cases, %d done, %d skipped, %d failed -> %s", len(cases), counts["done"],
                counts["skipped"], counts["failed"], batch_dir / "summary.json")
    if counts["failed"]:  # after every case and the summary: the command ends with an error, a rerun retries them
        raise BatchIncomplete(batch_dir / "summary.csv", f"{counts['failed']} of {len(cases)} case(s) failed: "
                              + "; ".join(f"{r['id']}: {r['error']}" for r in merged if r["status"] == "failed")[:2000])
    return summary


class BatchIncomplete(CineReadError):
    """Some cases of a batch failed (each named with its error in the summary); the others are done."""


def batch_cases(datalist: str | None, split: str, cines: str | None, annotations: str | None) -> list[Case]:
    """The cases of a datalist split, or of a cine folder with its annotation folder (exactly one of the two)."""
    if bool(datalist) == bool(cines):
        raise ValueError("give either --datalist (with --split) or --cines with --annotations")
    if datalist:
        return cases_from_datalist(datalist, split)
    if not annotations:
        raise ValueError("--cines needs --annotations (a folder of masks named like the cines)")
    return cases_from_folder(cines, annotations)
