"""scripts/next_sample_gain.py: what one correction at the strategy's frame is worth, on the synthetic test cines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from next_sample_gain import main  # noqa: E402

from medvos.monai_label.infer import APP_OPTIONS  # noqa: E402


def test_next_sample_gain_scores_each_pick_with_the_true_mask_as_correction(tmp_path, synthetic_root):
    out = tmp_path / "next.json"
    res = main(["--set", f"synthetic={synthetic_root / 'datalist.json'}:test", "--picks", "rule,middle,worst",
                "--out", str(out)])
    assert json.loads(out.read_text()) == res and res["options"] == APP_OPTIONS  # the app's options
    cines = res["sets"]["synthetic"]["cines"]
    assert cines
    for row in cines.values():
        picks = row["picks"]
        assert all(0 < p["frame"] < row["frames"] for p in picks.values())  # never the annotated frame 0
        assert picks["middle"]["frame"] == row["frames"] // 2
        # the oracle picks the frame the first propagation got most wrong
        assert picks["worst"]["dice_at_frame"] <= min(p["dice_at_frame"] for p in picks.values())
        for p in picks.values():
            assert 0.0 <= p["after"] <= 1.0 and 0.0 <= p["before_on_rest"] <= 1.0
        same = [p["after"] for p in picks.values() if p["frame"] == picks["rule"]["frame"]]
        assert len(set(same)) == 1  # one propagation per picked frame
    for name, summary in res["sets"]["synthetic"]["picks"].items():
        gains = [r["picks"][name]["after"] - r["picks"][name]["before_on_rest"] for r in cines.values()]
        assert summary["gain"] == pytest.approx(np.mean(gains), abs=1e-4)
    with pytest.raises(SystemExit, match="not a pick"):
        main(["--set", f"s={synthetic_root / 'datalist.json'}:test", "--picks", "best", "--out", str(out)])
    with pytest.raises(SystemExit, match="not an inference option"):
        main(["--set", f"s={synthetic_root / 'datalist.json'}:test", "--grid", "nonsense=1", "--out", str(out)])
