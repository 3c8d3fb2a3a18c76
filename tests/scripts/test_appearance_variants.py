"""scripts/appearance_variants.py: the mean over several tunings and flip augmentation of the appearance, scored
through the default motion fusion and alone on the tune_motion cache (tiny synthetic set)."""

from __future__ import annotations

from appearance_variants import main  # scripts/ is on pytest's pythonpath


def test_appearance_variants_score_the_tunings_and_their_means(tmp_path, synthetic_root):
    import tune_motion

    spec = f"synthetic={synthetic_root / 'datalist.json'}:test"
    store = tmp_path / "cache"
    rows = main(["--set", spec, "--seeds", "0,1", "--flip", "--tune-steps", "2", "--cache", str(store),
                 "--out", str(tmp_path / "v.json")])["rows"]
    assert list(rows) == ["seed 0", "seed 1", "mean of seeds 0,1", "flip, seed 0"]
    assert all(0.0 <= r["synthetic"]["worst"] <= r["synthetic"]["fused"] <= 1.0 for r in rows.values())
    assert len(list(store.iterdir())) == 3  # two tunings and the mirrored pass
    alone = [r["synthetic"]["alone"] for r in rows.values()]
    assert len(set(alone)) == len(alone)  # each variant is another appearance
    # seed 0 through the fusion is tune_motion's default row: the replay of the `inferring` path
    ref = tune_motion.main(["--set", spec, "--tune-steps", "2", "--tune-seed", "0", "--cache", str(store)])
    assert abs(ref["rows"][0]["dice"]["synthetic"] - rows["seed 0"]["synthetic"]["fused"]) < 1e-9
