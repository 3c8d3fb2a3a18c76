"""Datalist builders for public dataset layouts (paths are stored relative to the dataset root).

- CVC-ClinicDB: ``images/N.png`` + ``masks/N.png`` (or ``Original/`` + ``Ground Truth/``, PNG or TIFF) and a
  sequence table ``sequences.csv`` (sequence_id, first_frame, last_frame, n_frames): one entry per sequence;
  sequences 1-20 training/validation (development), 21-29 test.
- Kvasir-SEG: ``images/*.jpg`` + ``masks/*.jpg``: labelled images, group ``kvasir``.
- Generic videos: ``<root>/<video>/frames/*`` + ``<root>/<video>/masks/*`` (masks for all or some frames).
- CAMUS-style: ``<root>/patientXXXX/patientXXXX_{2CH,4CH}_half_sequence[_gt].nii.gz`` (NIfTI release) or
  ``..._sequence[_gt].mhd`` (ITK release); sequences without a full ground truth become unlabelled videos.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path
from typing import Any

from medvos.io.errors import CineReadError
from medvos.io.formats import IMAGE_SUFFIXES, list_frame_files, natural_key

CVC_TEST_SEQUENCES = range(21, 30)


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def _find_dir(root: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise CineReadError(root, f"expected one of the folders {names}")


def _frame_file(folder: Path, n: int) -> Path:
    for ext in (".png", ".tif", ".tiff", ".jpg", ".bmp"):
        p = folder / f"{n}{ext}"
        if p.is_file():
            return p
    raise CineReadError(folder / f"{n}.png", "frame listed in the sequence table is missing")


def cvc_clinicdb(root: str | Path, sequences_csv: str | Path | None = None) -> dict[str, Any]:
    """CVC-ClinicDB: one video entry per sequence; training/validation = sequences 1-20, test = 21-29."""
    root = Path(root)
    images = _find_dir(root, ("images", "Original", "PNG/Original", "TIF/Original"))
    masks = _find_dir(root, ("masks", "Ground Truth", "GroundTruth", "PNG/Ground Truth", "TIF/Ground Truth"))
    table = Path(sequences_csv) if sequences_csv else root / "sequences.csv"
    if not table.is_file():
        raise CineReadError(table, "sequence table not found (columns: sequence_id, first_frame, last_frame)")
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
        raise CineReadError(root, "expected 'images/' and 'masks/' folders (Kvasir-SEG layout)")
    entries = []
    for img in list_frame_files(images):
        mask = next((m for m in (masks / img.name, masks / f"{img.stem}.png") if m.is_file()), None)
        if mask is None:
            raise CineReadError(img, "has no mask with the same name in masks/")
        entries.append({"id": f"kvasir_{img.stem}", "image": _rel(img, root), "label": _rel(mask, root),
                        "group": "kvasir"})
    random.Random(seed).shuffle(entries)
    n_val = int(round(len(entries) * validation_fraction))
    return {"name": "Kvasir-SEG", "training": entries[n_val:], "validation": entries[:n_val], "test": []}


def generic_videos(root: str | Path, test_fraction: float = 0.3, seed: int = 0) -> dict[str, Any]:
    """``<root>/<video>/frames/`` + ``masks/`` (all or some frames; partial masks match frames by file stem).

    Videos are split by video into training (all labelled frames) / validation and test (first labelled frame
    as support).
    """
    root = Path(root)
    videos = sorted((d for d in root.iterdir() if (d / "frames").is_dir()), key=lambda d: natural_key(d.name))
    if not videos:
        raise CineReadError(root, "no '<video>/frames/' folders found")
    entries = []
    for v in videos:
        e: dict[str, Any] = {"id": v.name, "image": _rel(v / "frames", root)}
        if (v / "masks").is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in (v / "masks").iterdir()):
            e["label"] = _rel(v / "masks", root)
        entries.append(e)
    random.Random(seed).shuffle(entries)
    n_test = max(1, int(round(len(entries) * test_fraction))) if len(entries) > 1 else 0
    test, dev = entries[:n_test], entries[n_test:]
    return {
        "name": root.name,
        "training": list(dev),
        "validation": [e for e in dev if "label" in e],
        "test": [e for e in test if "label" in e],
        "unlabeled": [e for e in entries if "label" not in e],
    }


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
        raise CineReadError(root, "no CAMUS sequences (patientXXXX_2CH_half_sequence.nii.gz / _sequence.mhd)")
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
