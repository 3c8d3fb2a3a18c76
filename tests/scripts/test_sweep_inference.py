"""scripts/sweep_inference.py: the full `inferring` path for a grid of options (tiny synthetic set, shipped model)."""

from __future__ import annotations

import json

import pytest

from sweep_inference import main  # scripts/ is on pytest's pythonpath


def test_sweep_scores_a_grid_and_resumes(tmp_path, synthetic_root):
    out = tmp_path / "sweep.json"
    args = ["--set", f"synthetic={synthetic_root / 'datalist.json'}:test", "--grid", "tune_steps=0,2",
            "--grid", "motion=false", "--out", str(out)]
    rows = main(args)["combinations"]
    assert [r["options"] for r in rows] == [{"tune_steps": 0, "motion": False}, {"tune_steps": 2, "motion": False}]
    for r in rows:
        videos = r["sets"]["synthetic"]["videos"]
        assert videos and all(0.0 <= d <= 1.0 for d in videos.values())
        assert r["mean"] == r["sets"]["synthetic"]["dice"]
    assert rows[0]["sets"] != rows[1]["sets"]  # tuning changes the masks
    again = main(args)["combinations"]  # a rerun with the same --out skips what is there
    assert again == json.loads(out.read_text())["combinations"] == rows
    with pytest.raises(SystemExit, match="not an inference option"):
        main(["--set", f"s={synthetic_root / 'datalist.json'}:test", "--grid", "nonsense=1", "--out", str(out)])


def test_sweep_relearns_on_each_cine_first(tmp_path, synthetic_root, monkeypatch):
    import medvos.engines.test_time as test_time

    calls = []
    relearn = test_time.relearn_on_cine

    def counted(*args, **kwargs):
        calls.append(kwargs["steps"])
        return relearn(*args, **kwargs)

    monkeypatch.setattr(test_time, "relearn_on_cine", counted)
    args = ["--set", f"synthetic={synthetic_root / 'datalist.json'}:test", "--grid", "relearn_steps=0,1",
            "--grid", "tune_steps=0", "--out", str(tmp_path / "sweep.json")]
    plain, relearned = main(args)["combinations"]
    assert relearned["options"] == {"relearn_steps": 1, "tune_steps": 0}
    videos = relearned["sets"]["synthetic"]["videos"]
    assert videos.keys() == plain["sets"]["synthetic"]["videos"].keys()
    assert calls == [1] * len(videos)  # once per cine, in the relearning combination only
    assert all(0.0 <= d <= 1.0 for d in videos.values())
