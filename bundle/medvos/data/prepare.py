"""Datalist builders for public dataset layouts (paths are stored relative to the dataset root).

- CVC-ClinicDB: ``images/N.png`` + ``masks/N.png`` (or ``Original/`` + ``Ground Truth/``, PNG or TIFF) and a
  sequence table ``sequences.csv`` (sequence_id, first_frame, last_frame, n_frames): one entry per sequence;
  sequences 1-20 training/validation (development), 21-29 test.
- Kvasir-SEG: ``images/*.jpg`` + ``masks/*.jpg``: labelled images, group ``kvasir``.
- Generic videos: ``<root>/<video>/frames/*`` + ``<root>/<video>/masks/*`` (masks for all or some frames).
- CAMUS-style: ``<root>/patientXXXX/patientXXXX_{2CH,4CH}_half_sequence[_gt].nii.gz`` (NIfTI release) or
  ``..._sequence[_gt].mhd`` (ITK release); sequences without a full ground truth become unlabelled videos.
- Image sets: ``<root>/images/*`` + ``<root>/masks/*`` (same stem), binary or multi-label with a label map
  (one binary target per structure); split by patient (a regular expression on the file stem names it).
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path
from typing import Any

from medvos.io.errors import DatalistError
from medvos.io.formats import IMAGE_SUFFIXES, list_frame_files, natural_key
from medvos.io.readers import labels_from_pixels

CVC_TEST_SEQUENCES = range(21, 30)

# Known image sets: (target group prefix, label map, patient regex on the file stem, hold-out rule).
# ``None`` regex: every image is its own patient (identity not published); "last" hold-out keeps the last
# patients in file order (consecutive frames of one sequence stay together), "random" draws them.
IMAGE_SETS: dict[str, dict[str, Any]] = {
    "kvasir": {"labels": {1: "polyp"}, "patient": None, "holdout": "random"},
    "busi": {"labels": {1: "breast lesion"}, "patient": None, "holdout": "random"},
    "hc18": {"labels": {1: "fetal head"}, "patient": r"^(\d+)_", "holdout": "random"},
    "cvc_colondb": {"labels": {1: "polyp"}, "patient": r"^(\d+)$", "holdout": "last"},
    "acdc": {"labels": {1: "right ventricle", 2: "myocardium", 3: "left ventricle"}, "patient": r"^(patient\d+)_",
             "holdout": "random"},
}


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def _find_dir(root: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise DatalistError(root, f"expected one of the folders {names}")


def _frame_file(folder: Path, n: int) -> Path:
    for ext in (".png", ".tif", ".tiff", ".jpg", ".bmp"):
        p = folder / f"{n}{ext}"
        if p.is_file():
            return p
    raise DatalistError(folder / f"{n}.png", "frame listed in the sequence table is missing")


def cvc_clinicdb(root: str | Path, sequences_csv: str | Path | None = None) -> dict[str, Any]:
    """CVC-ClinicDB: one video entry per sequence; training/validation = sequences 1-20, test = 21-29."""
    root = Path(root)
    images = _find_dir(root, ("images", "Original", "PNG/Original", "TIF/Original"))
    masks = _find_dir(root, ("masks", "Ground Truth", "GroundTruth", "PNG/Ground Truth", "TIF/Ground Truth"))
    table = Path(sequences_csv) if sequences_csv else root / "sequences.csv"
    if not table.is_file():
        raise DatalistError(table, "sequence table not found (columns: sequence_id, first_frame, last_frame)")
    out: dict[str, list] = {"training": [], "validation": [], "test": []}
    with open(table, newline="") as fh:
        for row in csv.DictReader(fh):
            sid, first, last = int(row["sequence_id"]), int(row["first_frame"]), int(row["last_frame"])
            frames = [_rel(_frame_file(images, n), root) for n in range(first, last + 1)]
            labels = [_rel(_frame_file(masks, n), root) for n in range(first, last + 1)]
            entry = {"id": f"cvc_seq{sid:02d}", "image": frames, "label": labels, "labeled_frames": [0]}
            if sid in CVC_TEST_SEQUENCES:
                out["test"].append(entry)
            else:
                out["validation"].append(entry)
                out["training"].append({**entry, "labeled_frames": "all"})
    return {"name": "CVC-ClinicDB", **out}


def kvasir_seg(root: str | Path, validation_fraction: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Kvasir-SEG labelled images (group ``kvasir``); optionally hold out a fraction as image validation."""
    root = Path(root)
    images, masks = root / "images", root / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise DatalistError(root, "expected 'images/' and 'masks/' folders (Kvasir-SEG layout)")
    entries = []
    for img in list_frame_files(images):
        mask = next((m for m in (masks / img.name, masks / f"{img.stem}.png") if m.is_file()), None)
        if mask is None:
            raise DatalistError(img, "has no mask with the same name in masks/")
        entries.append({"id": f"kvasir_{img.stem}", "image": _rel(img, root), "label": _rel(mask, root),
                        "group": "kvasir"})
    random.Random(seed).shuffle(entries)
    n_val = int(round(len(entries) * validation_fraction))
    return {"name": "Kvasir-SEG", "training": entries[n_val:], "validation": entries[:n_val], "test": []}


def _frames_dir(video: Path) -> Path | None:
    return next((video / n for n in ("frames", "images") if (video / n).is_dir()), None)


def generic_videos(root: str | Path, test_fraction: float = 0.3, seed: int = 0) -> dict[str, Any]:
    """``<root>/<video>/frames/`` (or ``images/``) + ``masks/`` (all or some frames; partial masks match frames by
    file stem).

    Videos are split by video into training (all labelled frames) / validation and test (first labelled frame
    as support). ``test_fraction=0`` keeps every video for development (validation).
    """
    root = Path(root)
    videos = sorted((d for d in root.iterdir() if d.is_dir() and _frames_dir(d)), key=lambda d: natural_key(d.name))
    if not videos:
        raise DatalistError(root, "no '<video>/frames/' (or '<video>/images/') folders found")
    entries = []
    for v in videos:
        e: dict[str, Any] = {"id": v.name, "image": _rel(_frames_dir(v), root)}
        if (v / "masks").is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in (v / "masks").iterdir()):
            e["label"] = _rel(v / "masks", root)
        entries.append(e)
    random.Random(seed).shuffle(entries)
    n_test = max(1, int(round(len(entries) * test_fraction))) if len(entries) > 1 and test_fraction > 0 else 0
    test, dev = entries[:n_test], entries[n_test:]
    return {
        "name": root.name,
        "training": list(dev),
        "validation": [e for e in dev if "label" in e],
        "test": [e for e in test if "label" in e],
        "unlabeled": [e for e in entries if "label" not in e],
    }


def image_set(root: str | Path, name: str, labels: dict[int, str] | None = None, patient: str | None = None,
              validation_fraction: float = 0.1, holdout: str = "random", seed: int = 0) -> dict[str, Any]:
    """Labelled images ``<root>/images/*`` + ``<root>/masks/*`` (mask: same stem, any image suffix).

    Every (image, structure) pair present in the mask is one entry ``{"id", "image", "label", "label_value",
    "group": "<name>/<structure>", "patient"}``; a multi-label mask gives one binary target per structure
    (``labels`` maps a label value, as :func:`medvos.io.readers.labels_from_pixels` reads it, to its structure
    name: a 0/255 or 0/1 mask is label 1; default ``{1: name}``). About ``validation_fraction`` of the patients (``patient``: a regular expression whose first group
    names the patient in the file stem; default: every image its own patient) are held out as validation, drawn
    at random or, with ``holdout="last"``, the last ones in file order.
    """
    import numpy as np
    from PIL import Image

    root = Path(root)
    images, masks = root / "images", root / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise DatalistError(root, "expected 'images/' and 'masks/' folders (image-set layout)")
    labels = {int(k): str(v) for k, v in (labels or {1: name}).items()}
    regex = re.compile(patient) if patient else None
    by_stem = {m.stem: m for m in masks.iterdir() if m.suffix.lower() in IMAGE_SUFFIXES}
    entries: list[dict[str, Any]] = []
    for img in list_frame_files(images):
        mask = by_stem.get(img.stem)
        if mask is None:
            raise DatalistError(img, "has no mask with the same stem in masks/")
        m = regex.match(img.stem) if regex else None
        if regex and not m:
            raise DatalistError(img, f"file name does not match the patient pattern {patient!r}")
        pid = m.group(1) if m else img.stem
        pixels = np.asarray(Image.open(mask), dtype=np.float32)
        pixels = pixels[None, None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)[None]
        lossy = mask.suffix.lower() in (".jpg", ".jpeg")
        present = set(int(v) for v in np.unique(labels_from_pixels(pixels, lossy)) if v)
        for value in sorted(present & set(labels)):
            entries.append({"id": f"{name}_{img.stem}" + (f"_{value}" if len(labels) > 1 else ""),
                            "image": _rel(img, root), "label": _rel(mask, root), "label_value": value,
                            "group": f"{name}/{labels[value]}", "patient": f"{name}/{pid}"})
    if not entries:
        raise DatalistError(root, f"no image with a labelled structure {sorted(labels)}")
    patients = sorted({e["patient"] for e in entries}, key=natural_key)
    n_val = int(round(len(patients) * validation_fraction))
    if holdout == "last":
        held = set(patients[len(patients) - n_val:]) if n_val else set()
    else:
        random.Random(seed).shuffle(patients)
        held = set(patients[:n_val])
    return {"name": name, "training": [e for e in entries if e["patient"] not in held],
            "validation": [e for e in entries if e["patient"] in held], "test": []}


def known_image_set(root: str | Path, layout: str, validation_fraction: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """:func:`image_set` with the label map and patient rule of a known public set (see ``IMAGE_SETS``)."""
    spec = IMAGE_SETS[layout]
    return image_set(root, layout, spec["labels"], spec["patient"], validation_fraction, spec["holdout"], seed)


def camus(root: str | Path, test_fraction: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """CAMUS-style 2D+t echo sequences (NIfTI or MetaImage); multi-label masks (LV, myocardium, atrium)."""
    root = Path(root)
    pattern = re.compile(r"^(patient\d+)_(\dCH)_(half_sequence|sequence)\.(nii\.gz|nii|mhd)$")
    entries = []
    for f in sorted(root.rglob("patient*"), key=lambda p: natural_key(str(p))):
        m = pattern.match(f.name)
        if not m:
            continue
        patient, view, kind, ext = m.groups()
        gt = f.with_name(f"{patient}_{view}_{kind}_gt.{ext}")
        e: dict[str, Any] = {"id": f"{patient}_{view}", "image": _rel(f, root), "patient": patient}
        if gt.is_file():
            e.update({"label": _rel(gt, root), "labeled_frames": [0]})
        entries.append(e)
    if not entries:
        raise DatalistError(root, "no CAMUS sequences (patientXXXX_2CH_half_sequence.nii.gz / _sequence.mhd)")
    patients = sorted({e["patient"] for e in entries}, key=natural_key)
    random.Random(seed).shuffle(patients)
    test_p = set(patients[: max(1, int(round(len(patients) * test_fraction)))]) if len(patients) > 1 else set()
    labelled = [e for e in entries if "label" in e]
    return {
        "name": "CAMUS",
        "training": [{**e, "labeled_frames": "all"} for e in labelled if e["patient"] not in test_p],
        "validation": [e for e in labelled if e["patient"] not in test_p],
        "test": [e for e in labelled if e["patient"] in test_p],
        "unlabeled": [e for e in entries if "label" not in e],
    }


def with_base(datalist: dict[str, Any], root: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Rewrite relative paths (relative to ``root``) so they resolve from ``out_dir`` (where the JSON lives)."""
    import os

    rel = Path(os.path.relpath(Path(root).resolve(), Path(out_dir).resolve()))

    def fix(v: Any) -> Any:
        if isinstance(v, list):
            return [fix(x) for x in v]
        return str(rel / v) if isinstance(v, str) else v

    out = dict(datalist)
    for split, entries in datalist.items():
        if isinstance(entries, list):
            out[split] = [{**e, **{k: fix(e[k]) for k in ("image", "label") if k in e}} for e in entries]
    return out
