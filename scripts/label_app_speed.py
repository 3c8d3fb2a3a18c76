#!/usr/bin/env python
"""Seconds a cine takes to propagate through the MONAI Label app, as 3D Slicer asks for it (issue 15 item 4).

    python scripts/label_app_speed.py --cine /data/echo.dcm [--annotation label.nii.gz] [--repeats 3] --out DIR

Starts the app's real server (``scripts/start_label_server.py``, default: the shipped model) on a temporary studies
folder holding a copy of the cine, saves the annotation as the cine's ``final`` label (what Slicer's Submit Label
does; default: a centred box on frame 0, on the grid SimpleITK loads the cine on) and times ``POST
/infer/propagate`` with the NIfTI result returned (what Slicer's Run waits for): the first request (it loads the
model and compiles the exported graph: start-up) and ``--repeats`` warm ones. Writes ``results.json`` and
``table.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the servers this script and the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(studies: Path, models: Path, log_file: Path, checkpoint: Path | None = None,
                   extra: list[str] | None = None, env: dict[str, str] | None = None,
                   timeout: float = 300.0) -> Iterator[tuple[str, float]]:
    """The app's real server (``scripts/start_label_server.py``) on a free local port, its output in ``log_file``:
    ``(url, seconds until /info answered)``; stopped on exit (the tests' server too)."""
    import requests

    port = free_port()
    cmd = [sys.executable, str(REPO / "scripts/start_label_server.py"), "--studies", str(studies),
           "--models", str(models), "--port", str(port)] + (["--model", str(checkpoint)] if checkpoint else [])
    url = f"http://127.0.0.1:{port}"
    with open(log_file, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd + list(extra or []), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=log_file.parent, env={**os.environ, **(env or {})})
        try:
            while True:
                try:
                    if requests.get(url + "/info/", timeout=5).ok:
                        break
                except requests.ConnectionError:
                    pass
                if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                    raise RuntimeError("server did not start:\n" + log_file.read_text()[-3000:])
                time.sleep(0.5)
            yield url, time.perf_counter() - t0
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def box_annotation(cine_path: Path, out: Path) -> Path:
    """A centred box on frame 0 (timing only), on the grid SimpleITK reads the cine on (else medvos' NIfTI)."""
    from medvos.io import read_cine
    from medvos.io.writers import write_nifti
    from medvos.monai_label.geometry import write_labels_on_itk_grid

    cine = read_cine(cine_path, lazy=True)
    h, w = cine.size
    labels = np.zeros((cine.num_frames, h, w), np.uint8)
    labels[0, h // 3: 2 * h // 3, w // 3: 2 * w // 3] = 1
    if not write_labels_on_itk_grid(labels, cine_path, out):
        write_nifti(out, labels, like=cine)
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import requests

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        studies, models = tmp / "studies", tmp / "models"
        studies.mkdir()
        models.mkdir()
        name = args.cine.name.replace(" ", "_")
        shutil.copy(args.cine, studies / name)
        cid = name[: -len("".join(Path(name).suffixes))] if Path(name).suffixes else name
        annotation = args.annotation or box_annotation(studies / name, tmp / "annotation.nii.gz")
        extra = shlex.split(args.server_args or "")
        with running_server(studies, models, tmp / "server.log", args.checkpoint, extra) as (url, ready):
            t = time.perf_counter()
            r = requests.put(f"{url}/datastore/label", params={"image": cid, "tag": "final"},
                             files={"label": ("label.nii.gz", Path(annotation).read_bytes())}, timeout=300)
            r.raise_for_status()
            save = time.perf_counter() - t
            seconds = []
            for _ in range(1 + args.repeats):
                t = time.perf_counter()
                r = requests.post(f"{url}/infer/propagate", params={"image": cid, "output": "image"}, timeout=600)
                r.raise_for_status()
                seconds.append(time.perf_counter() - t)
            meta = requests.post(f"{url}/infer/propagate", params={"image": cid, "output": "json"}, timeout=600).json()
    from medvos.benchmarking.evaluation import machine_info
    from medvos.io import read_cine

    cine = read_cine(args.cine, lazy=True)
    return {"cine": str(args.cine), "server_args": args.server_args or "", "frames": cine.num_frames, "size": list(cine.size), "format": cine.format,
            "server_ready_seconds": ready, "save_label_seconds": save, "first_infer_seconds": seconds[0],
            "warm_infer_seconds": seconds[1:], "warm_median_seconds": statistics.median(seconds[1:]),
            "result_bytes": len(r.content), "checkpoint": meta.get("checkpoint"), "machine": machine_info()}


def table(res: dict[str, Any]) -> str:
    warm = ", ".join(f"{s:.2f}" for s in res["warm_infer_seconds"])
    return "\n".join([
        "| cine | frames | size | server ready | first infer (start-up) | warm infers | **median** |",
        "|---|---|---|---|---|---|---|",
        f"| {Path(res['cine']).name} ({res['format']}) | {res['frames']} | {res['size'][0]}x{res['size'][1]} | "
        f"{res['server_ready_seconds']:.1f} s | {res['first_infer_seconds']:.2f} s | {warm} s | "
        f"**{res['warm_median_seconds']:.2f} s** |", ""])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cine", type=Path, required=True, help="the cine (any format the app lists)")
    ap.add_argument("--annotation", type=Path, help="its label on the cine's ITK grid (default: a box on frame 0)")
    ap.add_argument("--checkpoint", type=Path, help="base model (default: the shipped general model)")
    ap.add_argument("--repeats", type=int, default=3, help="warm infer requests timed after the first")
    ap.add_argument("--server-args", default=None,
                    help='options of scripts/start_label_server.py for the server, e.g. "--tune-steps 45 '
                         '--tune-precision auto" (default: the app\'s own)')
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if not args.cine.is_file():
        raise SystemExit(f"{args.cine}: file not found")
    res = measure(args)
    print(table(res))
    if args.out:
        from medvos.io.atomic import atomic_write_bytes

        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out / "results.json", json.dumps(res, indent=2).encode())
        atomic_write_bytes(args.out / "table.md", table(res).encode())
    return res


if __name__ == "__main__":
    main()
