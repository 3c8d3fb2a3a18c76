"""Deterministic synthetic cines: the embedded default dataset of the bundle (no download, seconds to make).

Two families:
    - ``echo``: an ultrasound sector fan with speckle, a bright myocardial wall and a dark cavity that contracts
      and relaxes periodically (target = cavity, like the left ventricle);
    - ``endo``: textured pink tissue seen by a moving, zooming camera with a polyp-like blob that drifts and
      changes scale (target = blob).

:func:`make_synthetic_dataset` writes the set in the real formats (PNG images for phase 1, DICOM multi-frame
and NIfTI cines with NIfTI masks for validation/test) plus a MONAI-style ``datalist.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from medvos.io.atomic import atomic_write_bytes
from medvos.io.writers import write_nifti, write_png
from medvos.data.synthetic_dicom import write_dicom_cine

FAMILIES = ("echo", "endo")


@dataclass
class SyntheticCine:
    """Frames ``(T, C, H, W)`` uint8 and labels ``(T, H, W)`` uint8 of one generated cine."""

    frames: np.ndarray
    labels: np.ndarray
    family: str
    frame_time_ms: float


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Band-limited noise in [0, 1] (Gaussian-blurred white noise)."""
    n = rng.standard_normal(shape).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=scale)
    n -= n.min()
    return n / max(float(n.max()), 1e-6)


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0,
             wobble: np.ndarray | None = None) -> np.ndarray:
    """Boolean ellipse (optionally with an angular radius modulation ``wobble`` of harmonic amplitudes)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * dx + s * dy) / rx, (-s * dx + c * dy) / ry
    r = np.sqrt(u**2 + v**2)
    if wobble is not None:
        th = np.arctan2(v, u)
        mod = 1.0 + sum(a * np.cos((k + 2) * th + p) for k, (a, p) in enumerate(wobble))
        r = r / mod
    return r <= 1.0


def echo_cine(seed: int, size: int = 128, num_frames: int = 20, motion: float = 1.0) -> SyntheticCine:
    """An echo-like cine: sector fan, speckle, periodic cavity contraction (``motion=0``: static)."""
    rng = np.random.default_rng(seed)
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    apex_y, apex_x = 0.04 * h, w / 2 + rng.uniform(-0.04, 0.04) * w
    ang = np.arctan2(xx - apex_x, yy - apex_y)
    rad = np.hypot(xx - apex_x, yy - apex_y)
    half = np.deg2rad(rng.uniform(33, 40))
    fan = (np.abs(ang) < half) & (rad < 0.95 * h)
    cy, cx = rng.uniform(0.5, 0.6) * h, apex_x + rng.uniform(-0.06, 0.06) * w
    ry0, rx0 = rng.uniform(0.2, 0.26) * h, rng.uniform(0.11, 0.15) * w
    tilt = rng.uniform(-0.25, 0.25)
    period = rng.uniform(10, 16)
    phase0 = rng.uniform(0, 2 * np.pi)
    wall = rng.uniform(0.55, 0.8)
    tissue = 0.25 + 0.2 * _smooth_noise(rng, (h, w), size / 16)
    frames, labels = [], []
    for t in range(num_frames):
        contraction = 0.5 - 0.5 * np.cos(2 * np.pi * t / period + phase0)
        s = 1.0 - 0.25 * contraction * motion
        cav = _ellipse(h, w, cy, cx, ry0 * s, rx0 * s, tilt)
        myo = _ellipse(h, w, cy, cx, ry0 * s + 0.06 * h, rx0 * s + 0.06 * w, tilt) & ~cav
        img = tissue.copy()
        img[myo] = wall
        img[cav] = 0.06
        speckle = rng.rayleigh(0.8, (h, w)).astype(np.float32)
        speckle = cv2.GaussianBlur(speckle, (0, 0), 0.7)
        img = img * speckle * (1.0 - 0.35 * rad / h)
        img[~fan] = 0.0
        frames.append(np.clip(img * 255, 0, 255).astype(np.uint8)[None])
        labels.append((cav & fan).astype(np.uint8))
    return SyntheticCine(np.stack(frames), np.stack(labels), "echo", 1000.0 / 30)


def endo_cine(seed: int, size: int = 128, num_frames: int = 20, motion: float = 1.0) -> SyntheticCine:
    """An endoscopy-like cine: tissue texture, camera pan/zoom, a drifting, scaling polyp (``motion=0``: static)."""
    rng = np.random.default_rng(seed)
    big = int(size * 1.6)
    base = 0.55 + 0.45 * _smooth_noise(rng, (big, big), size / 10)
    fine = _smooth_noise(rng, (big, big), 1.5)
    tint = np.array([rng.uniform(0.75, 0.95), rng.uniform(0.35, 0.5), rng.uniform(0.3, 0.45)], np.float32)
    world = (base * (0.85 + 0.15 * fine))[..., None] * tint
    vessels = _smooth_noise(rng, (big, big), 3.0)
    world[np.abs(vessels - 0.5) < 0.02] *= 0.7
    c0 = np.array([big / 2 + rng.uniform(-0.15, 0.15) * size, big / 2 + rng.uniform(-0.15, 0.15) * size])
    r0 = rng.uniform(0.1, 0.17) * size
    wob = [(rng.uniform(0, 0.12), rng.uniform(0, 2 * np.pi)) for _ in range(3)]
    polyp_tint = np.array([rng.uniform(0.9, 1.0), rng.uniform(0.5, 0.65), rng.uniform(0.4, 0.55)], np.float32)
    pan = rng.uniform(-0.012, 0.012, 2) * size * motion
    zoom_rate = rng.uniform(-0.012, 0.012) * motion
    drift = rng.uniform(-0.006, 0.006, 2) * size * motion
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    vignette = 1.0 - 0.45 * (np.hypot(yy - size / 2, xx - size / 2) / size) ** 2
    frames, labels = [], []
    for t in range(num_frames):
        centre = c0 + drift * t
        r = r0 * (1.0 + 0.1 * np.sin(t / 5.0) * motion)
        blob = _ellipse(big, big, centre[0], centre[1], r, r * 1.15, 0.3, np.array(wob))
        img = world.copy()
        shade = np.clip(1.15 - 0.5 * np.hypot(*(np.mgrid[0:big, 0:big] - centre[:, None, None])) / r, 0.6, 1.2)
        img[blob] = (polyp_tint * (0.8 + 0.2 * fine[blob, None])) * shade[blob, None]
        zoom = 1.0 + zoom_rate * t
        cam = np.array([big / 2, big / 2]) + pan * t
        m = cv2.getRotationMatrix2D((float(cam[1]), float(cam[0])), 0.0, zoom)
        m[:, 2] += np.array([size / 2 - cam[1], size / 2 - cam[0]])
        view = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        lab = cv2.warpAffine(blob.astype(np.uint8), m, (size, size), flags=cv2.INTER_NEAREST)
        view = view * vignette[..., None] + rng.normal(0, 0.015, view.shape).astype(np.float32)
        frames.append(np.clip(view * 255, 0, 255).astype(np.uint8).transpose(2, 0, 1))
        labels.append(lab)
    return SyntheticCine(np.stack(frames), np.stack(labels), "endo", 40.0)


def synthetic_cine(family: str, seed: int, size: int = 128, num_frames: int = 20, motion: float = 1.0) -> SyntheticCine:
    """Dispatch to :func:`echo_cine` / :func:`endo_cine`."""
    if family == "echo":
        return echo_cine(seed, size, num_frames, motion)
    if family == "endo":
        return endo_cine(seed, size, num_frames, motion)
    raise ValueError(f"unknown synthetic family '{family}' (expected one of {FAMILIES})")


def make_synthetic_dataset(root: str | Path, size: int = 128, images_per_family: int = 48, val_cines: int = 2,
                           test_cines: int = 2, num_frames: int = 20, seed: int = 0, train_cines: int = 2) -> Path:
    """Write the synthetic dataset under ``root`` and return the path of its ``datalist.json``.

    Layout::

        images/{family}_{k}.png, masks/{family}_{k}.png       labelled images (phase 1, grouped by family)
        cines/echo_{split}{k}.dcm + cines/echo_{split}{k}_mask.nii.gz    DICOM multi-frame US + NIfTI mask
        cines/endo_{split}{k}.nii.gz + cines/endo_{split}{k}_mask.nii.gz  RGB NIfTI + NIfTI mask
        cines/{family}_train{k}.*   training cines with only frame 0 labelled ("labeled_frames": [0]): one more
                                    episode source for phase 1, unlabelled videos for phase-2 relearning
        datalist.json   {"training": images + training cines, "validation": cines, "test": cines}

    Idempotent: an existing complete dataset with the same parameters is reused.
    """
    root = Path(root)
    params = {"size": size, "images_per_family": images_per_family, "val_cines": val_cines,
              "test_cines": test_cines, "num_frames": num_frames, "seed": seed, "train_cines": train_cines,
              "version": 2}
    datalist_path = root / "datalist.json"
    if datalist_path.is_file():
        try:
            if json.loads(datalist_path.read_text()).get("params") == params:
                return datalist_path
        except (json.JSONDecodeError, OSError):
            pass
    training, validation, test = [], [], []
    for fi, family in enumerate(FAMILIES):
        for k in range(images_per_family):
            c = synthetic_cine(family, seed * 100003 + fi * 10007 + k, size, num_frames=1 + k % 7)
            t = len(c.frames) - 1
            img = c.frames[t].transpose(1, 2, 0)
            name = f"{family}_{k:03d}.png"
            write_png(root / "images" / name, img[..., 0] if img.shape[-1] == 1 else img)
            write_png(root / "masks" / name, c.labels[t] * 255)
            training.append({"id": f"{family}_{k:03d}", "image": f"images/{name}", "label": f"masks/{name}",
                             "group": f"synthetic-{family}"})
        for split, count, out in (("val", val_cines, validation), ("test", test_cines, test),
                                  ("train", train_cines, training)):
            offset = {"val": 0, "test": 500, "train": 1000}[split]
            for k in range(count):
                c = synthetic_cine(family, seed * 100003 + fi * 10007 + 5000 + offset + k, size, num_frames)
                stem = f"cines/{family}_{split}{k}"
                if family == "echo":
                    image = f"{stem}.dcm"
                    write_dicom_cine(root / image, c.frames, c.frame_time_ms)
                else:
                    image = f"{stem}.nii.gz"
                    write_nifti(root / image, c.frames, frame_time_ms=c.frame_time_ms)
                write_nifti(root / f"{stem}_mask.nii.gz", c.labels, frame_time_ms=c.frame_time_ms)
                out.append({"id": f"{family}_{split}{k}", "image": image, "label": f"{stem}_mask.nii.gz",
                            "labeled_frames": [0]})
    datalist = {"name": "medvos-synthetic", "params": params, "training": training, "validation": validation,
                "test": test}
    atomic_write_bytes(datalist_path, json.dumps(datalist, indent=1).encode())
    return datalist_path
