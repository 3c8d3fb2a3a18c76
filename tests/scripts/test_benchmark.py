"""scripts/benchmark.py end to end on a tiny synthetic datalist (sanity only: numbers are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory, synthetic_root):
    from medvos.data.datalist import load_datalist, write_datalist
    from medvos.data.synthetic import echo_cine
    from medvos.io.writers import write_nifti
    from medvos.networks.image_model import FewShotSegNet
    from medvos.networks.relearn_model import RelearnNet

    root = tmp_path_factory.mktemp("bench")
    c = echo_cine(seed=3, size=48, num_frames=6)
    write_nifti(root / "static.nii.gz", np.repeat(c.frames[:1], 6, 0))
    write_nifti(root / "static_mask.nii.gz", np.repeat(c.labels[:1], 6, 0))
    moving = load_datalist(synthetic_root / "datalist.json", "test")[:1]
    write_datalist(root / "datalist.json", {"test": [{"id": "static", "image": str(root / "static.nii.gz"),
                                                      "label": str(root / "static_mask.nii.gz"),
                                                      "labeled_frames": "all"}] + moving})
    torch.manual_seed(0)
    net = FewShotSegNet.from_sizes(backbone_weights=None)
    torch.save(net.state_dict(), root / "model.pt")
    torch.save(RelearnNet.from_sizes(net, clip_length=4, tau_hidden=16).state_dict(), root / "relearned.pt")
    out = root / "out"
    cmd = [sys.executable, str(REPO / "scripts/benchmark.py"), "--datalist", str(root / "datalist.json"),
           "--split", "test", "--image-size", "48", "--clip-length", "4", "--tau-hidden", "16",
           "--phase1", str(root / "model.pt"), "--relearned", str(root / "relearned.pt"), "--tree-variants",
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_benchmark_writes_every_method(tiny_benchmark):
    res = json.loads((tiny_benchmark / "results.json").read_text())
    from medvos.inference.defaults import inference_defaults

    variant = ", single path" if inference_defaults()["memory_tree"] else " + memory tree"
    methods = ["copy-mask", "optical flow (dis)", "phase-1 model", "phase-1 model" + variant, "relearned model",
               "relearned model" + variant]
    assert list(res["overall"]) == methods
    for m in methods:
        o = res["overall"][m]
        assert 0.0 <= o["dice"] <= 1.0 and 0.0 <= o["iou"] <= 1.0 and o["fps"] > 0 and o["peak_rss_mb"] > 50
    static = next(v for v in res["videos"] if v["id"] == "static")
    assert static["copy-mask"]["dice"] == 1.0  # a static video: copying the support mask is exact
    assert static["optical flow (dis)"]["dice"] > 0.99
    assert res["machine"]["cores"] >= 1
    table = (tiny_benchmark / "table.md").read_text()
    assert all(m in table for m in methods)
    assert {p.name for p in (tiny_benchmark / "plots").glob("*.png")} == {f"{v['id']}.png" for v in res["videos"]}
