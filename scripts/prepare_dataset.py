#!/usr/bin/env python
"""Build a MONAI-style datalist JSON from a public dataset's download layout.

Examples:
    python scripts/prepare_dataset.py cvc /data/CVC-ClinicDB --out /data/CVC-ClinicDB/datalist.json
    python scripts/prepare_dataset.py kvasir /data/Kvasir-SEG --out /data/kvasir_cvc.json \
        --validation-from /data/CVC-ClinicDB:validation --test-from /data/CVC-ClinicDB:test
    python scripts/prepare_dataset.py generic /data/my_videos --out /data/my_videos/datalist.json
    python scripts/prepare_dataset.py camus /data/CAMUS/database_nifti --out /data/camus.json
    python scripts/prepare_dataset.py acdc /data/acdc_slices --out /data/acdc_slices/datalist.json
    python scripts/prepare_dataset.py images /data/my_set --out /data/my_set/datalist.json \
        --label-map "1=left ventricle,2=myocardium" --patient-regex "^(patient\d+)_"

Image-set layouts (``images/`` + ``masks/``; one binary target per structure, held-out patients as validation):
``busi``, ``hc18``, ``cvc_colondb``, ``acdc`` (their label maps and patient rules are built in) and ``images`` (any
set: ``--label-map``, ``--patient-regex``). A combined multi-domain datalist: ``scripts/prepare_general.py``.

``--validation-from ROOT:SPLIT`` / ``--test-from ROOT:SPLIT`` take that split of a CVC-ClinicDB root, so a
phase-1 run can train on Kvasir-SEG images and validate few-shot on CVC-ClinicDB videos.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medvos.data import prepare
from medvos.data.datalist import write_datalist

BUILDERS = {"cvc": prepare.cvc_clinicdb, "kvasir": prepare.kvasir_seg, "generic": prepare.generic_videos,
            "camus": prepare.camus,
            **{name: (lambda root, n=name: prepare.known_image_set(root, n)) for name in prepare.IMAGE_SETS
               if name != "kvasir"}}


def parse_label_map(text: str) -> dict[int, str]:
    """``"1=right ventricle,2=myocardium"`` -> ``{1: "right ventricle", 2: "myocardium"}``."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        value, sep, name = part.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip():
            raise SystemExit(f"--label-map: expected VALUE=NAME pairs, got {part!r}")
        out[int(value)] = name.strip()
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("layout", choices=sorted(BUILDERS) + ["images"])
    ap.add_argument("root", type=Path, help="dataset root in its public download layout")
    ap.add_argument("--out", type=Path, required=True, help="datalist JSON to write")
    ap.add_argument("--validation-from", help="CVC_ROOT:SPLIT to use as the validation list")
    ap.add_argument("--test-from", help="CVC_ROOT:SPLIT to use as the test list")
    ap.add_argument("--label-map", default="", help="images layout: VALUE=NAME,... (default: binary, 1=<folder>)")
    ap.add_argument("--patient-regex", help="images layout: first group names the patient in the file stem")
    ap.add_argument("--validation-fraction", type=float, default=0.1, help="images layout: held-out patients")
    args = ap.parse_args(argv)
    out_dir = args.out.parent
    if args.layout == "images":
        built = prepare.image_set(args.root, args.root.name, parse_label_map(args.label_map) or None,
                                  args.patient_regex, args.validation_fraction)
    else:
        built = BUILDERS[args.layout](args.root)
    datalist = prepare.with_base(built, args.root, out_dir)
    for key, spec in (("validation", args.validation_from), ("test", args.test_from)):
        if spec:
            root, _, split = spec.rpartition(":")
            other = prepare.with_base(prepare.cvc_clinicdb(root), root, out_dir)
            datalist[key] = other[split]
    write_datalist(args.out, datalist)
    counts = {k: len(v) for k, v in datalist.items() if isinstance(v, list)}
    print(f"wrote {args.out}: {json.dumps(counts)}")
    return args.out


if __name__ == "__main__":
    main()
