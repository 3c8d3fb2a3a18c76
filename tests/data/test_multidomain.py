"""Multi-domain phase-1 data: image-set layouts with label maps, splits by patient, balanced episodes from other
patients, held-out per-target validation items, and the combined general datalist (real data where present)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, shared
from medvos.data import prepare
from medvos.data.episodes import EpisodeDataset, FrameBank
from medvos.data.videos import VideoDataset
from medvos.io import CineReadError


def _image_set(root, patients=4, per_patient=3, size=32):
    """``images/`` + ``masks/``: patient p, slice k; labels 1 (every slice) and 2 (odd slices)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for p in range(patients):
        for k in range(per_patient):
            name = f"patient{p:03d}_slice_{k}"
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / "images" / f"{name}.jpg")
            m = np.zeros((size, size), np.uint8)
            m[4:12, 4:12] = 1
            if k % 2:
                m[18:26, 18:26] = 2
            Image.fromarray(m).save(root / "masks" / f"{name}.png")
    return root


def test_image_set_label_map_and_patient_split(tmp_path):
    root = _image_set(tmp_path / "set")
    dl = prepare.image_set(root, "toy", {1: "left", 2: "right"}, r"^(patient\d+)_", validation_fraction=0.25)
    groups = Counter(e["group"] for e in dl["training"] + dl["validation"])
    assert groups == {"toy/left": 12, "toy/right": 4}  # one binary target per structure present
    train_p = {e["patient"] for e in dl["training"]}
    val_p = {e["patient"] for e in dl["validation"]}
    assert len(val_p) == 1 and not train_p & val_p  # split by patient, never by image
    with pytest.raises(CineReadError, match="patient pattern"):
        prepare.image_set(root, "toy", None, r"^(case\d+)_")


def test_bank_keeps_one_structure_and_balanced_episodes_pair_other_patients(tmp_path):
    root = _image_set(tmp_path / "set")
    dl = prepare.with_base(prepare.image_set(root, "toy", {1: "left", 2: "right"}, r"^(patient\d+)_", 0.0),
                           root, tmp_path)
    entries = [{**e, "image": str(tmp_path / e["image"]), "label": str(tmp_path / e["label"])}
               for e in dl["training"]]
    bank = FrameBank(entries, 32, progress=False)
    right = bank.by_group["toy/right"]
    assert all(bank.masks[i][0, 20, 20] == 1 and bank.masks[i][0, 8, 8] == 0 for i in right)
    ds = EpisodeDataset(bank, shots=1, length=40, balanced=True)
    seen = Counter()
    for i in range(40):
        seen[ds.targets[i % len(ds.targets)]] += 1
        ep = ds[i]
        assert ep["image"].shape == (7, 32, 32)
    assert seen["toy/left"] == seen["toy/right"] == 20  # 12 vs 4 images, equal share of episodes
    np.random.seed(0)
    for q in range(len(bank)):  # supports come from other patients of the same target
        group = bank.by_group[bank.groups[q]]
        others = [j for j in group if bank.patients[j] != bank.patients[q]]
        assert others


def test_validation_items_per_target(tmp_path):
    root = _image_set(tmp_path / "set")
    dl = prepare.image_set(root, "toy", {1: "left", 2: "right"}, r"^(patient\d+)_", 0.5)
    entries = [{**e, "image": str(root / e["image"]), "label": str(root / e["label"])} for e in dl["validation"]]
    ds = VideoDataset(entries, image_size=32)
    assert [ds[i]["id"] for i in range(len(ds))] == ["toy/left", "toy/right"]
    item = ds[0]
    assert item["query"].shape[1:] == (3, 32, 32) and item["support"].shape == item["query"].shape
    assert item["support_mask"].sum() > 0 and item["label"].shape == item["query"].shape[:1] + (32, 32)


@pytest.mark.realdata
def test_general_datalist_real(tmp_path):
    import subprocess
    import sys

    names = {"kvasir": "kvasir_seg", "busi": "busi", "hc18": "hc18", "cvc_colondb": "cvc_colondb",
             "acdc": "acdc_slices"}
    args = [a for k, v in names.items() for a in ("--images", f"{k}={shared(v)}")]
    args += ["--videos", f"cvc={shared('cvc_clinicdb')}", "--videos", f"generic={shared('carotid_us_dev')}"]
    out = tmp_path / "general.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/prepare_general.py"), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dl = json.loads(out.read_text())
    targets = {e["group"] for e in dl["training"]}
    assert targets == {"kvasir/polyp", "busi/breast lesion", "hc18/fetal head", "cvc_colondb/polyp",
                       "acdc/right ventricle", "acdc/myocardium", "acdc/left ventricle"}
    train_p = {e["patient"] for e in dl["training"]}
    held = [e for e in dl["validation"] if "group" in e]
    assert held and not train_p & {e["patient"] for e in held}
    assert {e["group"] for e in held} == targets  # every target reported on held-out patients
    # no video of the development sets (CVC-ClinicDB, carotid) is trained on
    assert not any("cvc_clinicdb" in str(e["image"]) or "carotid" in str(e["image"]) for e in dl["training"])
    videos = [e for e in dl["validation"] if "group" not in e]
    assert len(videos) == 27 and len(dl["test"]) == 9


def test_frame_scores_count_objects_only():
    """Dice averages the objects, never the background (an empty prediction of a present object scores 0)."""
    from medvos.metrics import frame_scores

    gt = np.zeros((3, 10, 10), np.uint8)
    gt[:, :5, :5] = 1
    pred = np.zeros_like(gt)
    pred[1, :5, :5] = 1
    pred[2, :5, :] = 1  # 25 of 50 predicted pixels right
    s = frame_scores(pred, gt)
    np.testing.assert_allclose(s["dice"], [0.0, 1.0, 2 * 25 / (25 + 50)], atol=1e-6)
    np.testing.assert_allclose(s["iou"], [0.0, 1.0, 25 / 50], atol=1e-6)
    two = gt.copy()
    two[:, 6:, 6:] = 2
    np.testing.assert_allclose(frame_scores(gt, two)["dice"], [0.5, 0.5, 0.5], atol=1e-6)  # object 2 missed


def test_dataset_balanced_episodes_give_each_image_set_one_share(tmp_path):
    """``balanced="dataset"``: a set with two structures gets the share of a set with one, split between them."""
    entries = []
    for name, labels in (("toy", {1: "left", 2: "right"}), ("solo", {1: "lesion"})):
        root = _image_set(tmp_path / name)
        dl = prepare.image_set(root, name, labels, r"^(patient\d+)_", 0.0)
        entries += [{**e, "image": str(root / e["image"]), "label": str(root / e["label"])} for e in dl["training"]]
    bank = FrameBank(entries, 32, progress=False)
    assert sorted(bank.by_group) == ["solo/lesion", "toy/left", "toy/right"]
    np.random.seed(0)
    by_dataset = EpisodeDataset(bank, shots=1, length=600, balanced="dataset")
    shares = Counter(by_dataset._target(i) for i in range(600))
    assert shares["solo/lesion"] == 300  # every other episode
    assert 120 <= shares["toy/left"] <= 180 and shares["toy/left"] + shares["toy/right"] == 300
    by_target = EpisodeDataset(bank, shots=1, length=600, balanced=True)
    assert Counter(by_target._target(i) for i in range(600)) == {t: 200 for t in bank.by_group}
    assert by_dataset[1]["image"].shape == (7, 32, 32)
    with pytest.raises(ValueError, match="balanced"):
        EpisodeDataset(bank, balanced="patient")


def test_self_support_episodes_pair_a_frame_with_itself(tmp_path):
    """``self_support``: that fraction of episodes takes the query's own frame as support (the same instance, as in
    a cine); the rest, and any query with an empty mask, take other patients' frames."""
    root = _image_set(tmp_path / "set")
    dl = prepare.image_set(root, "toy", {1: "left"}, r"^(patient\d+)_", 0.0)
    entries = [{**e, "image": str(root / e["image"]), "label": str(root / e["label"])} for e in dl["training"]]
    bank = FrameBank(entries, 32, progress=False)

    def own_frame(ep):  # no transform: a self-support episode packs the query's very pixels as its support
        return torch.equal(ep["image"][:3], ep["image"][3:6])

    np.random.seed(0)
    half = EpisodeDataset(bank, shots=2, length=400, self_support=0.5)
    own = [own_frame(half[i]) for i in range(400)]
    assert 160 <= sum(own) <= 240
    assert all(own_frame(EpisodeDataset(bank, self_support=1.0)[i]) for i in range(len(bank)))
    assert not any(own_frame(EpisodeDataset(bank, self_support=0.0)[i]) for i in range(len(bank)))
    bank.masks[0][:] = 0  # nothing to support with: other patients' frames instead
    assert not own_frame(EpisodeDataset(bank, self_support=1.0)[0])
    with pytest.raises(ValueError, match="self_support"):
        EpisodeDataset(bank, self_support=1.5)
