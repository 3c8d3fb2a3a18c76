#!/usr/bin/env python
"""Build a MONAI-style datalist JSON from a public dataset's download layout.

Examples:
    python scripts/prepare_dataset.py cvc /data/CVC-ClinicDB --out /data/CVC-ClinicDB/datalist.json
    python scripts/prepare_dataset.py kvasir /data/Kvasir-SEG --out /data/kvasir_cvc.json \
        --validation-from /data/CVC-ClinicDB:validation --test-from /data/CVC-ClinicDB:test
    python scripts/prepare_dataset.py generic /data/my_videos --out /data/my_videos/datalist.json
    python scripts/prepare_dataset.py camus /data/CAMUS/database_nifti --out /data/camus.json

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
            "camus": prepare.camus}


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("layout", choices=sorted(BUILDERS))
    ap.add_argument("root", type=Path, help="dataset root in its public download layout")
    ap.add_argument("--out", type=Path, required=True, help="datalist JSON to write")
    ap.add_argument("--validation-from", help="CVC_ROOT:SPLIT to use as the validation list")
    ap.add_argument("--test-from", help="CVC_ROOT:SPLIT to use as the test list")
    args = ap.parse_args(argv)
    out_dir = args.out.parent
    datalist = prepare.with_base(BUILDERS[args.layout](args.root), args.root, out_dir)
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
