#!/usr/bin/env python
"""Render the 3D Slicer walkthrough of the MONAI Label app from the real server's real answers (no Slicer needed).

    python scripts/make_slicer_walkthrough.py --cine /data/color3d_jpeg_baseline.dcm \
        --drawing bundle/docs/images/walkthrough/drawing.json --out bundle/docs/images/walkthrough

Starts the app's server (the shipped model) on a studies folder holding a copy of the cine and does what an
annotator does in Slicer's MONAI Label module, each step through the HTTP calls the plugin makes, each answer read
the way the plugin reads it (volumes and labels with SimpleITK, settings from ``/info``):

1. **load**: ``GET /info`` (the propagate task's settings), ``POST /activelearning/least_confident_frame`` (Next
   Sample: the cine and frame to annotate), ``GET /datastore/image`` (the volume Slicer shows);
2. **annotate frame 0**: the object drawn on frame 0 (``--drawing``: polygons in pixel coordinates per frame, what
   an annotator draws with Slicer's segment editor), ``PUT /datastore/label`` (Submit Label);
3. **run**: ``POST /infer/propagate`` (every frame; per-frame confidence and drift in the answer);
4. **next sample**: the strategy names the frame whose annotation stands to correct the most;
5. **correct**: the object drawn on that frame (from ``--drawing``), submitted, run again;
6. **train**: ``POST /train/relearn`` and ``GET /info`` polled as Slicer's progress bar polls it; the relearned model
   then propagates.

One PNG per step and ``walkthrough.json`` (every answer) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_app_speed import running_server  # noqa: E402


def polygons_to_labels(drawing: dict[str, list[list[float]]], frames: int, size: tuple[int, int],
                       only: list[int]) -> np.ndarray:
    """Labels ``(T,H,W)`` with the drawn polygons (value 1) on the frames in ``only``."""
    import cv2

    labels = np.zeros((frames, *size), np.uint8)
    for key, poly in drawing.items():
        t = int(key)
        if t in only:
            cv2.fillPoly(labels[t], [np.round(np.asarray(poly)).astype(np.int32)], 1)
    return labels


def sitk_array(content: bytes, suffix: str) -> np.ndarray:
    """A downloaded volume or label as Slicer's loader gets it: SimpleITK, array ``(T,H,W[,3])``."""
    import SimpleITK as sitk

    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(content)
        f.flush()
        return sitk.GetArrayFromImage(sitk.ReadImage(f.name))


def show(ax: Any, frame: np.ndarray, label: np.ndarray | None = None, title: str = "", colour: str = "yellow",
         crop: tuple[slice, slice] | None = None) -> None:
    grey = frame if frame.ndim == 2 else frame[..., :3]
    ax.imshow(grey[crop] if crop else grey, cmap="gray")
    if label is not None and label.any():
        ax.contour((label[crop] if crop else label) > 0, levels=[0.5], colors=colour, linewidths=1.2)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def frames_over_curves(panels: list[tuple[np.ndarray, np.ndarray, str, str]], curves: list[tuple[list, str]],
                       title: str, out: Path, crop: tuple[slice, slice] | None, height: float,
                       mark: int | None = None) -> None:
    """One row of frames with their contours (``(frame, labels, title, colour)``) over per-frame curves."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, height))
    grid = fig.add_gridspec(2, len(panels), height_ratios=[2.2, 1])
    for i, (frame, labels, name, colour) in enumerate(panels):
        show(fig.add_subplot(grid[0, i]), frame, labels, name, colour, crop)
    ax = fig.add_subplot(grid[1, :])
    for values, name in curves:
        ax.plot(values, label=name)
    if mark is not None:
        ax.axvline(mark, color="grey", lw=0.8)
    ax.set_xlabel("frame")
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def settings_text(info: dict[str, Any]) -> str:
    task = info["models"]["propagate"]
    lines = [f"model: propagate ({task.get('checkpoint')})", f"labels: {task.get('labels')}", "settings (as Slicer shows them):"]
    for key, value in task.get("config", {}).items():
        lines.append(f"  {key}: " + (f"[{', '.join(map(str, value))}] (drop-down)" if isinstance(value, list)
                                     else f"{value!r} (text)"))
    lines.append(f"strategies: {', '.join(info.get('strategies', {}))}")
    lines.append(f"trainers: {', '.join(info.get('trainers', {}))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cine", type=Path, required=True)
    ap.add_argument("--drawing", type=Path, required=True,
                    help="JSON {frame: [[x, y], ...]}: the annotator's polygons (frame 0 and the correction)")
    ap.add_argument("--checkpoint", type=Path, help="base model (default: the shipped general model)")
    ap.add_argument("--max-epochs", type=int, default=1, help="relearning epochs of the Train step")
    ap.add_argument("--labels", default='{"left ventricle": 1}', help="the server's --labels (object names)")
    ap.add_argument("--crop", default=None, help="y0,y1,x0,x1 of the frames shown (default: whole frames)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import requests

    from medvos.io import read_cine
    from medvos.monai_label.geometry import write_labels_on_itk_grid

    drawing = json.loads(args.drawing.read_text())
    crop = None
    if args.crop:
        y0, y1, x0, x1 = (int(v) for v in args.crop.split(","))
        crop = (slice(y0, y1), slice(x0, x1))
    args.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"cine": args.cine.name}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        studies, models = tmp / "studies", tmp / "models"
        studies.mkdir()
        models.mkdir()
        shutil.copy(args.cine, studies / args.cine.name)
        cine = read_cine(studies / args.cine.name, lazy=True)
        t_frames, size = cine.num_frames, cine.size
        suffix = "".join(args.cine.suffixes)
        with running_server(studies, models, tmp / "server.log", args.checkpoint,
                            ["--max-epochs", str(args.max_epochs), "--labels", args.labels]) as (url, _):
            # 1. load
            info = requests.get(url + "/info/", timeout=30).json()
            sample = requests.post(url + "/activelearning/least_confident_frame", json={"client_id": "slicer"},
                                   timeout=300).json()
            cid = sample["id"]
            volume = sitk_array(requests.get(url + "/datastore/image", params={"image": cid}, timeout=60).content,
                                suffix)
            record["load"] = {"info_propagate": info["models"]["propagate"], "next_sample": sample,
                              "volume_shape": list(volume.shape)}
            fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1.2, 1]})
            show(axes[0], volume[0], title=f"1. Next Sample: {sample['PatientID']!r}\n({sample['reason']})",
                 crop=crop)
            axes[1].text(0, 1, settings_text(info), va="top", family="monospace", fontsize=7)
            axes[1].axis("off")
            fig.tight_layout()
            fig.savefig(args.out / "1_load.png", dpi=110)
            plt.close(fig)

            # 2. annotate frame 0 and submit
            def submit(frames: list[int], name: str) -> np.ndarray:
                labels = polygons_to_labels(drawing, t_frames, size, frames)
                path = tmp / name
                if not write_labels_on_itk_grid(labels, studies / args.cine.name, path):
                    raise SystemExit(f"{args.cine}: SimpleITK cannot read it; use a DICOM, NIfTI, NRRD or MHA cine")
                r = requests.put(url + "/datastore/label", params={"image": cid, "tag": "final"},
                                 files={"label": (name, path.read_bytes())}, timeout=120)
                r.raise_for_status()
                return labels

            drawn0 = submit([0], "frame0.nii.gz")

            # 3. run
            def run() -> tuple[np.ndarray, dict[str, Any], float]:
                t0 = time.perf_counter()
                r = requests.post(url + "/infer/propagate", params={"image": cid, "output": "all"}, timeout=600)
                r.raise_for_status()
                seconds = time.perf_counter() - t0
                meta = requests.post(url + "/infer/propagate", params={"image": cid, "output": "json"},
                                     timeout=600).json()
                from requests_toolbelt.multipart import decoder

                parts = {p.headers[b"Content-Disposition"].decode(): p.content
                         for p in decoder.MultipartDecoder.from_response(r).parts}
                image = next(v for k, v in parts.items() if "filename" in k)
                return sitk_array(image, ".nii.gz"), meta, seconds

            result, meta, seconds = run()
            record["run"] = {"seconds": seconds, **{k: meta[k] for k in ("annotated_frames", "object_names",
                                                                          "frame_confidence", "frame_drift")}}
            shown = sorted({0, t_frames // 4, t_frames // 2, 3 * t_frames // 4, t_frames - 1})
            frames_over_curves(
                [(volume[t], result[t], f"frame {t}" + (" (annotated)" if t == 0 else ""), "lime" if t else "yellow")
                 for t in shown],
                [(meta["frame_confidence"], "confidence"), (meta["frame_drift"], "drift (appearance vs motion)")],
                f"2-3. frame 0 annotated (yellow), Run: every frame propagated in {seconds:.1f} s (lime)",
                args.out / "2_annotate_and_run.png", crop, height=5.2)

            # 4. next sample
            sample2 = requests.post(url + "/activelearning/least_confident_frame", json={"client_id": "slicer"},
                                    timeout=300).json()
            k = int(sample2["frame"])
            record["next_sample"] = sample2
            if str(k) not in drawing:
                raise SystemExit(f"the strategy proposes frame {k}: add the annotator's polygon for frame {k} to "
                                 f"{args.drawing}")

            # 5. correct frame k, submit, run again
            submit([0, k], "corrected.nii.gz")
            result2, meta2, seconds2 = run()
            record["corrected"] = {"frame": k, "seconds": seconds2, "annotated_frames": meta2["annotated_frames"],
                                   "frame_drift": meta2["frame_drift"]}
            near = sorted({max(0, k - 10), k, min(t_frames - 1, k + 10)})
            frames_over_curves(
                [(volume[k], result[k], f"4. Next Sample: frame {k}\n(before correction)", "lime")]
                + [(volume[t], result2[t], f"frame {t} after" + (" (corrected)" if t == k else ""),
                    "yellow" if t == k else "cyan") for t in near],
                [(meta["frame_drift"], "drift, frame 0 annotated"),
                 (meta2["frame_drift"], f"drift, frames 0 and {k} annotated")],
                f"4-5. {sample2['reason']}: frame {k} corrected and submitted, Run again ({seconds2:.1f} s)",
                args.out / "3_next_sample_and_correct.png", crop, height=5.6, mark=k)

            # 6. train: started, then polled as Slicer's progress bar polls /info
            r = requests.post(url + "/train/relearn", json={"max_epochs": args.max_epochs}, timeout=60)
            r.raise_for_status()
            polls, t0 = [], time.perf_counter()
            while True:
                stats = requests.get(url + "/info/", timeout=30).json().get("train_stats", {}).get("relearn", {})
                polls.append({"t": time.perf_counter() - t0, **{k2: stats.get(k2) for k2 in
                              ("epoch", "total_epochs", "best_metric", "total_time")}})
                if stats.get("total_time") is not None or time.perf_counter() - t0 > 3600:
                    break
                time.sleep(2)
            info2 = requests.get(url + "/info/", timeout=30).json()
            result3, meta3, seconds3 = run()
            record["train"] = {"polls": polls, "checkpoint": info2["models"]["propagate"].get("checkpoint"),
                               "model": meta3["model"], "seconds": seconds3}
            fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1.4, 1, 1]})
            axes[0].step([p["t"] for p in polls], [p["epoch"] or 0 for p in polls], where="post")
            axes[0].set_xlabel("seconds")
            axes[0].set_ylabel(f"epoch of {args.max_epochs}")
            axes[0].set_title("6. Train: progress as polled from /info", fontsize=8)
            t_mid = t_frames // 2
            show(axes[1], volume[t_mid], result2[t_mid], f"frame {t_mid}, phase-1 model", "cyan", crop)
            show(axes[2], volume[t_mid], result3[t_mid], f"frame {t_mid}, relearned ({record['train']['checkpoint']})",
                 "magenta", crop)
            fig.tight_layout()
            fig.savefig(args.out / "4_train.png", dpi=110)
            plt.close(fig)
    record["drawn_pixels_frame0"] = int(drawn0[0].sum())
    (args.out / "walkthrough.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k in ("next_sample", "corrected")}, indent=1)[:2000])
    return record


if __name__ == "__main__":
    main()
