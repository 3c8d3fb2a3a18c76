#!/usr/bin/env python
"""Peak resident memory of reading a cine whole versus window by window.

    python scripts/read_memory.py /data/echo/cine.dcm --chunk 16

Each mode runs in its own process: ``eager`` reads every frame into one array (``read_cine(path)``), ``lazy``
walks the cine in windows of ``--chunk`` frames (``read_cine(path, lazy=True)``, what the inference workflow
does). The peak (Linux VmHWM) is reset after the imports, so it is the reading's own peak plus the interpreter.
Prints a Markdown table; ``--out`` also writes it with a JSON next to it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from speed_memory import reset_peak_rss, vm_kb

from medvos.io.atomic import atomic_write_bytes
from medvos.io.readers import read_cine


def child(path: str, mode: str, chunk: int) -> dict[str, Any]:
    """Read ``path`` in ``mode``; frame count, a checksum (so both modes provably read the same pixels), memory."""
    base = vm_kb("VmRSS") / 1024
    if not reset_peak_rss():
        raise SystemExit("needs Linux /proc/self/clear_refs to reset the peak resident memory")
    t0 = time.perf_counter()
    if mode == "eager":
        cine = read_cine(path)
        frames, total = cine.num_frames, float(cine.frames.sum(dtype="float64"))
    else:
        cine = read_cine(path, lazy=True)
        frames, total = cine.num_frames, 0.0
        for start in range(0, frames, chunk):
            total += float(cine.frames[start : start + chunk].sum(dtype="float64"))
    return {"mode": mode, "frames": frames, "shape": list(cine.frames.shape), "pixel_sum": total,
            "seconds": time.perf_counter() - t0, "rss_before_mb": base, "peak_rss_mb": vm_kb("VmHWM") / 1024}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="any cine medvos reads (DICOM, NIfTI, ITK, video file, frame folder)")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--out", type=Path, help="folder for results.json and table.md")
    ap.add_argument("--child", choices=("eager", "lazy"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.path, args.child, args.chunk)))
        return {}
    runs = {}
    for mode in ("eager", "lazy"):
        proc = subprocess.run([sys.executable, __file__, args.path, "--chunk", str(args.chunk), "--child", mode],
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{args.path}: {mode} read failed:\n{proc.stderr[-3000:]}")
        runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    if runs["eager"]["pixel_sum"] != runs["lazy"]["pixel_sum"]:
        raise SystemExit(f"{args.path}: eager and lazy reads differ (pixel sums {runs['eager']['pixel_sum']} vs "
                         f"{runs['lazy']['pixel_sum']})")
    res = {"path": args.path, "chunk": args.chunk, "runs": runs}
    lines = [f"`{Path(args.path).name}`, shape (T, C, H, W) = {tuple(runs['eager']['shape'])}, "
             f"windows of {args.chunk} frames.", "",
             "| read | peak RSS (MB) | RSS before (MB) | growth (MB) | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb'] - r['rss_before_mb']:.0f} | "
              f"{r['seconds']:.1f} |"
              for m, r in runs.items()]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out / "results.json", json.dumps(res, indent=1).encode())
        atomic_write_bytes(args.out / "table.md", table.encode())
    return res


if __name__ == "__main__":
    main()
