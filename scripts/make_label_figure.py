#!/usr/bin/env python
"""Render what an annotator gets back from the MONAI Label app: frame 0 annotated, every other frame propagated
by the app's "propagate" task, with the per-frame confidence the "least_confident_frame" strategy ranks by.

    python scripts/make_label_figure.py --model bundle/models/general.pt \
        --out bundle/docs/images/label_app_propagation.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from medvos.inference.sinks import overlay
from medvos.io.atomic import atomic_path
from medvos.io.readers import read_cine, read_mask
from medvos.monai_label.demo import make_demo_studies
from medvos.monai_label.infer import PropagateInfer


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("bundle/models/general.pt"), help="checkpoint to propagate with")
    ap.add_argument("--models", type=Path, default=Path("bundle/models"), help="where a relearned.pt would be taken from")
    ap.add_argument("--image-size", type=int, default=None, help="only for older checkpoints without a spec")
    ap.add_argument("--out", type=Path, default=Path("bundle/docs/images/label_app_propagation.png"))
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    task = PropagateInfer(args.models, args.model, image_size=args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        cines = make_demo_studies(tmp, cines=1, size=128, num_frames=20)
        paths = next(iter(cines.values()))
        result, meta = task({"image": str(paths["image"]), "annotation": str(paths["first_frame"])})
        cine = read_cine(paths["image"])
        labels = read_mask(result, like=cine).labels
        truth = read_mask(paths["truth"], like=cine).labels
        Path(result).unlink()
    frames = cine.frames.astype(np.float32) / 255.0
    frames = np.repeat(frames, 3, 1) if frames.shape[1] == 1 else frames
    shown = [0, 5, 10, 15, 19]
    rgb = overlay(frames[shown], labels[shown])
    fig = plt.figure(figsize=(11, 4.2))
    grid = fig.add_gridspec(2, len(shown), height_ratios=[2.2, 1])
    for i, t in enumerate(shown):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(rgb[i])
        a, b = labels[t] > 0, truth[t] > 0
        d = 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)
        ax.set_title("frame 0: annotated" if t == 0 else f"frame {t}: Dice {d:.2f}", fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    conf = meta["frame_confidence"]
    ax.plot(range(len(conf)), conf, marker="o", ms=3)
    worst = int(np.argmin(conf))
    ax.annotate("least confident: proposed next", (worst, conf[worst]), textcoords="offset points", xytext=(10, -12),
                fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame")
    ax.set_ylabel("confidence")
    ax.set_xlim(-0.5, len(conf) - 0.5)
    fig.suptitle(f"MONAI Label 'propagate' ({meta['model']} model): one annotated frame -> the whole cine", fontsize=10)
    fig.tight_layout()
    with atomic_path(args.out) as tmp_png:
        fig.savefig(tmp_png, dpi=110)
    plt.close(fig)
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
