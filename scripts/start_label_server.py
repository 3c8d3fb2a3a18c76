#!/usr/bin/env python
"""Start the medvos MONAI Label server on a folder of cines.

    python scripts/start_label_server.py --studies /data/cines               (the shipped general model)
    python scripts/start_label_server.py --studies /data/cines --model my_model.pt --models /data/app_models

Runs ``python -m monailabel.main start_server --app bundle/monailabel_app --studies <folder> --conf models <dir>
...`` with this Python (MONAI Label's ``monailabel`` console script would use whatever ``python`` is first on PATH).
MLflow runs of the "relearn" task go to a sqlite store beside the models unless ``--tracking-uri`` is given.
Extra arguments after ``--`` go to ``start_server`` unchanged (for example ``-- --workers 1``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "bundle" / "monailabel_app"


def command(args: argparse.Namespace, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP), "--studies",
           str(Path(args.studies).resolve()), "--host", args.host, "--port", str(args.port),
           "--conf", "models", str(Path(args.models).resolve()), "--conf", "model", str(Path(args.model).resolve()),
           "--conf", "clip_length", str(args.clip_length), "--conf", "fusion", args.fusion,
           "--conf", "max_epochs", str(args.max_epochs)]
    if args.tau_hidden:
        cmd += ["--conf", "tau_hidden", str(args.tau_hidden)]
    for key in ("memory_tree", "motion"):
        if getattr(args, key) is not None:
            cmd += ["--conf", key, str(getattr(args, key)).lower()]
    if args.runtime:
        cmd += ["--conf", "runtime", args.runtime]
    for key in ("tune_steps", "tune_views", "self_annotate", "tune_precision"):
        if getattr(args, key) is not None:
            cmd += ["--conf", key, str(getattr(args, key))]
    if args.image_size:
        cmd += ["--conf", "image_size", str(args.image_size)]
    if args.tracking_uri:
        cmd += ["--conf", "tracking_uri", args.tracking_uri]
    if args.labels:
        cmd += ["--conf", "labels", args.labels]
    return cmd + extra


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", required=True, help="folder of cines (2D+t NIfTI, DICOM, .mha/.nrrd, MP4/AVI/GIF)")
    ap.add_argument("--model", default=str(APP.parent / "models" / "general.pt"),
                    help="base model (phase 1 or relearned; default: the shipped general model)")
    ap.add_argument("--models", default=str(APP.parent / "models"),
                    help="folder where the relearn task writes relearned.pt (used instead of --model once there)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="only for older checkpoints without a spec (checkpoints carry their input size)")
    ap.add_argument("--clip-length", type=int, default=8)
    ap.add_argument("--tau-hidden", type=int, default=None, help="older relearned files without a spec only")
    ap.add_argument("--fusion", default="nearest", choices=["nearest", "fuse", "joint"])
    ap.add_argument("--memory-tree", action=argparse.BooleanOptionalAction, default=None,
                    help="appearance with the memory tree or single-path (default: as in inference.yaml)")
    ap.add_argument("--motion", action=argparse.BooleanOptionalAction, default=None,
                    help="fuse appearance with flow-warped motion (default: as in inference.yaml)")
    ap.add_argument("--runtime", choices=["torch", "onnxruntime", "openvino", "openvino-bf16"], default=None,
                    help="what runs the network (default: as in inference.yaml)")
    ap.add_argument("--tune-steps", type=int, default=None,
                    help="test-time tuning steps per infer request (default: the app's 30; 0: off)")
    ap.add_argument("--tune-views", type=int, default=None,
                    help="augmented views the tuning pairs its episodes from (default: the app's 16)")
    ap.add_argument("--tune-precision", choices=["float32", "bfloat16", "auto"], default=None,
                    help="the tuning's arithmetic (default: the app's float32; auto: bf16 where it is native, as "
                         "inferring)")
    ap.add_argument("--self-annotate", type=int, default=None,
                    help="self-annotated frames for a second pass (default: the app's 0, one pass; inferring's: 2)")
    ap.add_argument("--max-epochs", type=int, default=3, help="relearning epochs of the 'relearn' task")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--labels", default=None,
                    help='object names and label values as JSON, e.g. \'{"lv": 1, "myocardium": 2}\' '
                         '(default {"object": 1})')
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    return ap


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = parser().parse_args(argv)
    if not Path(args.model).is_file():
        sys.exit(f"{args.model}: model file not found")
    cmd = command(args, extra)
    print(" ".join(cmd), flush=True)
    os.execv(sys.executable, cmd)


if __name__ == "__main__":
    main()
