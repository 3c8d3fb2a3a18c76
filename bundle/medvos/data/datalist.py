"""MONAI-style datalists: ``{"training": [...], "validation": [...], "test": [...]}``.

An entry: ``{"id", "image": video|image|[frame files], "label": mask video|folder|[files], "labeled_frames":
[t, ...] | "all", "group": name}``. One-frame entries are images, grouped by ``group`` for episodes; a
multi-frame entry is a video whose labelled frames form their own group. :func:`resolve_datalist` says which
datalist a workflow uses: the user's (``datalist`` / ``dataset_dir``) or the embedded synthetic default.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medvos.io.atomic import atomic_write_bytes
from medvos.io.errors import DatalistError

logger = logging.getLogger(__name__)

SPLITS = ("training", "validation", "test")


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_resolve(v, base) for v in value]
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str(base / value)
    return value


def load_datalist(path: str | Path, split: str, base_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Entries of ``split`` with ``image``/``label`` paths made absolute (relative to ``base_dir`` or the file)."""
    path = Path(path)
    if not path.is_file():
        raise DatalistError(path, "datalist file not found")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatalistError(path, f"datalist is not valid JSON ({exc})") from exc
    if split not in content:
        raise DatalistError(path, f"datalist has no '{split}' list (has {sorted(k for k in content if k in SPLITS)})")
    base = Path(base_dir) if base_dir else path.parent
    out = []
    for i, entry in enumerate(content[split]):
        if "image" not in entry:
            raise DatalistError(path, f"entry {i} of '{split}' has no 'image'")
        e = dict(entry)
        e.setdefault("id", f"{split}_{i}")
        for key in ("image", "label"):
            if key in e:
                e[key] = _resolve(e[key], base)
        out.append(e)
    return out


def write_datalist(path: str | Path, datalist: dict[str, Any]) -> Path:
    """Write a datalist JSON atomically."""
    return atomic_write_bytes(path, json.dumps(datalist, indent=1).encode())


RUN_ONLY = ("network", "device", "datalist_path")  # hyperparameters the spec holds elsewhere or that name a machine


def summarise(entries: list[dict[str, Any]], datalist_path: str | Path | None = None,
              hyperparams: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a model was trained on, for its checkpoint: entry counts per target (``group``) and patients, and the
    run's options (``hyperparams``, the workflow's logged hyperparameters, less :data:`RUN_ONLY`), so a shipped file
    names its own recipe."""
    from collections import Counter

    targets = Counter(str(e.get("group", "videos")) for e in entries)
    patients = {str(e["patient"]) for e in entries if "patient" in e}
    out: dict[str, Any] = {"entries": len(entries), "targets": dict(sorted(targets.items()))}
    if patients:
        out["patients"] = len(patients)
    if datalist_path is not None:
        out["datalist"] = Path(datalist_path).name
    if hyperparams:
        out["options"] = {k: v for k, v in hyperparams.items() if k not in RUN_ONLY}
    return out


def resolve_datalist(datalist: str | None, dataset_dir: str | None, synthetic_dir: str | Path,
                     **synthetic_kwargs: Any) -> str:
    """Path of the datalist JSON to use.

    - ``datalist`` given: that file (relative entries resolve against ``dataset_dir`` if given, else its folder);
    - only ``dataset_dir`` given: ``<dataset_dir>/datalist.json`` (make one with ``scripts/prepare_dataset.py``);
    - neither: the synthetic set is generated (once, deterministic) under ``synthetic_dir``.
    """
    if datalist:
        p = Path(datalist)
        if not p.is_file():
            raise DatalistError(p, "datalist file not found")
        return str(p)
    if dataset_dir:
        p = Path(dataset_dir) / "datalist.json"
        if not p.is_file():
            raise DatalistError(p, "dataset_dir has no datalist.json: create it with scripts/prepare_dataset.py or "
                                "pass --datalist")
        return str(p)
    from medvos.data.synthetic import make_synthetic_dataset

    logger.info("no dataset configured: using the synthetic default set in %s", synthetic_dir)
    return str(make_synthetic_dataset(synthetic_dir, **synthetic_kwargs))
