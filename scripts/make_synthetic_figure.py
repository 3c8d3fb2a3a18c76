#!/usr/bin/env python
"""Render a few frames of each synthetic family with their masks (the model card's figure).

    python scripts/make_synthetic_figure.py --out bundle/docs/images/synthetic_set.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medvos.data.synthetic import FAMILIES, synthetic_cine
from medvos.io.atomic import atomic_path


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("bundle/docs/images/synthetic_set.png"))
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [0, 4, 8, 12, 16]
    fig, axes = plt.subplots(len(FAMILIES), len(steps), figsize=(2.2 * len(steps), 2.4 * len(FAMILIES)))
    for r, family in enumerate(FAMILIES):
        cine = synthetic_cine(family, args.seed)
        for c, t in enumerate(steps):
            img = cine.frames[t].transpose(1, 2, 0)
            ax = axes[r, c]
            ax.imshow(np.repeat(img, 3, 2) if img.shape[2] == 1 else img)
            ax.contour(cine.labels[t], [0.5], colors="yellow", linewidths=1)
            ax.set_title(f"{family}, frame {t}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    return args.out


if __name__ == "__main__":
    print(main())
