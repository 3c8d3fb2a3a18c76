#!/usr/bin/env python
"""Propagation speed of two source trees, measured alternately (A B A B ...) so the machine's drift falls on both.

    git worktree add /tmp/base <commit>
    python scripts/speed_ab.py --tree before=/tmp/base --tree after=. --rounds 2 \\
        --checkpoint bundle/models/general.pt [--cine FILE [--annotation MASK]] --out bundle/eval/speed_ab

Each round runs, for every tree in turn, this tree's ``scripts/speed_memory.py --propagation-repeats N`` (the
`inferring` predictor with every default, tunings run once and reused, so the runs time the propagation alone) in a
fresh process whose ``medvos`` is that tree's (``PYTHONPATH=<tree>/bundle``). Reports per tree the median frames
per second of each round, their mean, the ratio to the first tree, and whether every run of every tree gave the
same masks (sha256): a change meant to be exact must keep them equal. Writes ``results.json`` and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def tree(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` of a source tree that holds ``bundle/medvos``."""
    name, sep, path = spec.partition("=")
    root = Path(path).resolve()
    if not sep or not name or not (root / "bundle" / "medvos").is_dir():
        raise argparse.ArgumentTypeError(f"--tree {spec!r}: expected NAME=PATH of a tree with bundle/medvos")
    return name, root


def one_run(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ``speed_memory.py`` propagation measurement with ``root``'s medvos; its ``propagation`` result."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(REPO / "scripts/speed_memory.py"), "--skip", "speed,memory,end-to-end",
               "--propagation-repeats", str(args.repeats), "--image-size", str(args.image_size),
               "--speed-frames", str(args.speed_frames), "--out", tmp]
        for flag, value in (("--checkpoint", args.checkpoint), ("--cine", args.cine),
                            ("--annotation", args.annotation), ("--threads", args.threads)):
            if value is not None:
                cmd += [flag, str(value)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(root / "bundle")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{root}: speed_memory.py failed:\n{proc.stderr[-3000:]}")
        return json.loads((Path(tmp) / "results.json").read_text())["propagation"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=tree, action="append", required=True, help="NAME=PATH, two or more")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed propagations per run (median)")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--cine", type=Path, help="a real cine (default: the 96-frame speed cine)")
    ap.add_argument("--annotation", type=Path)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--speed-frames", type=int, default=96)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if len(args.tree) < 2 or len({n for n, _ in args.tree}) < len(args.tree):
        ap.error("--tree: two or more, with distinct names")
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in args.tree}
    for r in range(args.rounds):
        for name, root in args.tree:
            res = one_run(root, args)
            rounds[name].append(res)
            print(f"round {r + 1} {name}: {res['fps_propagation']:.1f} frames/s "
                  f"({res['fps_propagation_range'][0]:.1f}-{res['fps_propagation_range'][1]:.1f}), "
                  f"{res['cores']:.2f} cores", flush=True)
    first = args.tree[0][0]
    mean = {n: sum(r["fps_propagation"] for r in rs) / len(rs) for n, rs in rounds.items()}
    digests = {d for rs in rounds.values() for r in rs for d in r["masks_sha256"]}
    out = {"trees": {n: str(p) for n, p in args.tree}, "settings": {k: str(v) for k, v in vars(args).items()
                                                                     if k != "tree"},
           "cine": next(iter(rounds.values()))[0]["cine"], "rounds": rounds, "mean_fps": mean,
           "ratio_to_first": {n: m / mean[first] for n, m in mean.items()}, "same_masks": len(digests) == 1}
    table = markdown(out)
    if args.out:
        from medvos.io.atomic import atomic_write_bytes

        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out / "results.json", json.dumps(out, indent=1).encode())
        atomic_write_bytes(args.out / "table.md", (table + "\n").encode())
    print(table)
    return out


def markdown(out: dict[str, Any]) -> str:
    n = len(next(iter(out["rounds"].values())))
    lines = [f"Propagation alone (every `inferring` default, tunings reused) on the {out['cine']}, {n} alternated "
             "round(s), each the median of its runs:", "",
             "| tree | " + " | ".join(f"round {i + 1} (frames/s)" for i in range(n)) + " | mean | ratio | cores |",
             "|---|" + "---|" * (n + 3)]
    for name, rs in out["rounds"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r['fps_propagation']:.1f}" for r in rs)
                     + f" | {out['mean_fps'][name]:.1f} | {out['ratio_to_first'][name]:.3f} | "
                     + f"{sum(r['cores'] for r in rs) / len(rs):.2f} |")
    lines += ["", "Masks: " + ("the same in every run of every tree (sha256)." if out["same_masks"]
                               else "**differ** between runs or trees.")]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
