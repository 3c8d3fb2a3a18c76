"""scripts/tune_motion.py: caches appearance once (the predictor's network, tuned as `inferring` tunes it) and
scores a grid of motion-fusion settings (tiny synthetic set)."""

from __future__ import annotations

import json

from tune_motion import main  # scripts/ is on pytest's pythonpath


def test_tune_motion_scores_a_grid(tmp_path, synthetic_root):
    out, store = tmp_path / "tune.json", tmp_path / "cache"
    args = ["--set", f"synthetic={synthetic_root / 'datalist.json'}:test", "--grid", "motion_weight=0,3",
            "--tune-steps", "0", "--cache", str(store), "--out", str(out)]
    rows = main(args)["rows"]
    assert [r["settings"] for r in rows] == [{"motion_weight": 0.0}, {"motion_weight": 3.0}]
    assert all(0.0 <= r["worst"]["synthetic"] <= r["dice"]["synthetic"] <= 1.0 for r in rows)
    assert rows[0]["dice"] != rows[1]["dice"]  # the motion prior changes the masks
    videos = rows[1]["videos"]["synthetic"]
    assert videos and abs(sum(videos.values()) / len(videos) - rows[1]["dice"]["synthetic"]) < 1e-3
    assert json.loads(out.read_text())["best"] in rows
    assert len(list(store.iterdir())) == 1
    assert main(args)["rows"] == rows  # the cached appearance and flows score the same
    tuned = main(args[:-6] + ["--tune-steps", "2", "--cache", str(store)])["rows"]
    assert len(list(store.iterdir())) == 2  # another tuning: another cache entry
    assert tuned[0]["dice"] != rows[0]["dice"]  # the tuned network's appearance differs


def test_tune_motion_scores_what_inferring_propagates(synthetic_root):
    """The cached replay (appearance, both motion cues, edge refinement) gives the Dice of the predictor's own
    propagation, cine by cine: a setting chosen on the cache is the setting `inferring` runs."""
    import numpy as np

    from medvos.data.videos import VideoDataset, video_entries
    from medvos.inference.predictor import VideoPredictor
    from medvos.metrics import frame_scores
    from medvos.networks.checkpoint import SHIPPED_PATH as SHIPPED, input_size, load_model

    spec = f"{synthetic_root / 'datalist.json'}:test"
    settings = {"motion_weight": 1.5, "redetect_support": 0.15, "redetect_frames": 3, "anchor_weight": 2.0,
                "anchor_agreement": 0.6, "edge_radius": 3}
    row = main(["--set", f"s={spec}", "--tune-steps", "0", *[a for k, v in settings.items()
                                                               for a in ("--grid", f"{k}={v}")]])["rows"][0]
    predictor = VideoPredictor.with_defaults(load_model(SHIPPED).eval(), input_size(SHIPPED, 256)[0], 8,
                                             tune_steps=0, memory_tree=False, runtime="torch", self_annotate=0,
                                             **settings)
    for item in VideoDataset(video_entries(spec)):
        labels = (item["label"][:, 0].numpy() > 0).astype(np.uint8)
        state = predictor.init_state(item["entry"]["image"])
        predictor.add_annotation(state, 0, labels[0])
        pred = np.concatenate([w.labels for w in predictor.propagate(state)])
        dice = float(frame_scores((pred > 0).astype(np.uint8), labels, [0])["dice"].mean())
        assert abs(dice - row["videos"]["s"][str(item["entry"]["id"])]) < 1e-3, item["entry"]["id"]
