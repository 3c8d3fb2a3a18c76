#!/usr/bin/env python
"""Ship a trained checkpoint as the bundle's general model: checked, slimmed, fingerprinted.

    python scripts/ship_model.py runs/general/models/model.pt --out bundle/models/general.pt
    python scripts/ship_model.py "runs/general/models/phase1_resume_checkpoint_epoch=8.pt"   # the last epoch

The checkpoint (a best-model file or a resume checkpoint, whose ``model`` entry is taken) must carry its spec
(architecture, input size, training summary) and finite weights, and must rebuild from the file alone. The shipped file holds ``{"model": weights, "spec": spec}`` only (no optimiser
state); its sha256, size and spec go into ``bundle/configs/metadata.json`` (``shipped_model``), so a copy can be
checked against the model card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from medvos.io.atomic import atomic_path, atomic_write_bytes
from medvos.io.result_set import sha256_file
from medvos.networks.checkpoint import (FINGERPRINT_SUFFIX, CheckpointError, checkpoint_spec, load_model, model_state,
                                       write_fingerprint)

REPO = Path(__file__).resolve().parents[1]


def ship(source: Path, out: Path, metadata: Path, spec_from: Path | None = None) -> dict:
    spec = checkpoint_spec(spec_from or source)
    if spec is None:
        raise CheckpointError(f"{source}: no spec (architecture, input size): train it with this version of medvos")
    if spec_from is None:
        load_model(source)  # rebuilds from the file alone; refuses non-finite weights
    with atomic_path(out) as tmp:  # checked under its temporary name: the file it replaces may be fingerprinted
        torch.save({"model": model_state(source), "spec": spec}, tmp)  # (metadata.json, a sidecar), and that
        load_model(tmp)  # record is the old file's until the new one is in place
        sha256, size = sha256_file(tmp), tmp.stat().st_size
    if out.with_name(out.name + FINGERPRINT_SUFFIX).is_file():
        write_fingerprint(out)  # a sidecar of the replaced file would refuse the new one
    meta = json.loads(metadata.read_text())
    meta["shipped_model"] = {"file": f"models/{out.name}", "sha256": sha256, "bytes": size, "spec": spec}
    atomic_write_bytes(metadata, (json.dumps(meta, indent=4) + "\n").encode())
    return meta["shipped_model"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "bundle" / "models" / "general.pt")
    ap.add_argument("--spec-from", type=Path,
                    help="take the spec from this checkpoint of the same run (resume files written before 0.3.0 "
                         "have none)")
    ap.add_argument("--metadata", type=Path, default=REPO / "bundle" / "configs" / "metadata.json")
    args = ap.parse_args(argv)
    shipped = ship(args.checkpoint, args.out, args.metadata, args.spec_from)
    print(json.dumps({k: v for k, v in shipped.items() if k != "spec"}, indent=1))
    return shipped


if __name__ == "__main__":
    main()
