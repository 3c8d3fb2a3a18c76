#!/usr/bin/env python
"""Build the multi-domain datalist of the general model: labelled image sets for training, held-out patients
of each image set plus development videos for validation, test videos for testing.

    python scripts/prepare_general.py --out /data/general.json \\
        --images kvasir=/data/Kvasir-SEG --images busi=/data/busi --images hc18=/data/hc18 \\
        --images cvc_colondb=/data/cvc_colondb --images acdc=/data/acdc_slices \\
        --videos cvc=/data/CVC-ClinicDB --videos generic=/data/carotid_us_dev

``--images LAYOUT=ROOT``: an image set in a known layout (``kvasir``, ``busi``, ``hc18``, ``cvc_colondb``,
``acdc``; ``images/`` + ``masks/``); about ``--validation-fraction`` of its patients are held out (validation,
reported per target), the rest train. Each (set, structure) is one target (``group``).
``--videos LAYOUT=ROOT``: development videos, never trained on: ``cvc`` (CVC-ClinicDB: sequences 1-20 validation,
21-29 test) or ``generic`` (``<video>/images|frames/`` + ``masks/``: every video validation).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from medvos.data import prepare
from medvos.data.datalist import write_datalist


def _pair(text: str) -> tuple[str, Path]:
    layout, sep, root = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected LAYOUT=ROOT, got {text!r}")
    return layout.strip(), Path(root)


def build(images: list[tuple[str, Path]], videos: list[tuple[str, Path]], out_dir: Path,
          validation_fraction: float = 0.1, seed: int = 0) -> dict:
    """The combined datalist (paths relative to ``out_dir``)."""
    out: dict = {"name": "medvos-general", "training": [], "validation": [], "test": []}
    for layout, root in images:
        if layout not in prepare.IMAGE_SETS:
            raise SystemExit(f"unknown image-set layout {layout!r} (known: {sorted(prepare.IMAGE_SETS)})")
        dl = prepare.with_base(prepare.known_image_set(root, layout, validation_fraction, seed), root, out_dir)
        out["training"] += dl["training"]
        out["validation"] += dl["validation"]
    for layout, root in videos:
        if layout == "cvc":
            dl = prepare.cvc_clinicdb(root)
        elif layout == "generic":
            dl = prepare.generic_videos(root, test_fraction=0.0)
        else:
            raise SystemExit(f"unknown video layout {layout!r} (cvc, generic)")
        dl = prepare.with_base(dl, root, out_dir)
        name = root.name
        out["validation"] += [{**e, "id": f"{name}/{e['id']}", "labeled_frames": [0]} for e in dl["validation"]]
        out["test"] += [{**e, "id": f"{name}/{e['id']}", "labeled_frames": [0]} for e in dl["test"]]
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=_pair, action="append", default=[], help="LAYOUT=ROOT (repeatable)")
    ap.add_argument("--videos", type=_pair, action="append", default=[], help="LAYOUT=ROOT (repeatable)")
    ap.add_argument("--validation-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.images:
        raise SystemExit("give at least one --images LAYOUT=ROOT")
    dl = build(args.images, args.videos, args.out.parent, args.validation_fraction, args.seed)
    write_datalist(args.out, dl)
    for split in ("training", "validation", "test"):
        counts = Counter(e.get("group", "videos") for e in dl[split])
        print(f"{split}: {json.dumps(dict(sorted(counts.items())))}")
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
