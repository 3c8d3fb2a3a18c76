"""Batch inference over an archive (issue 16, item 3): resumable by manifest, sharded with torchrun, one summary."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from medvos.inference.batch import BatchIncomplete, cases_from_folder, run_batch, shard
from medvos.inference.predictor import VideoPredictor
from medvos.io.result_set import read_manifest
from medvos.io.writers import write_nifti


@pytest.fixture()
def archive(tmp_path, echo_small, endo_small):
    for i, c in enumerate([echo_small, endo_small, echo_small]):
        write_nifti(tmp_path / "cines" / f"case{i}.nii.gz", c.frames)
        ann = c.labels.copy()
        ann[1:] = 0
        write_nifti(tmp_path / "ann" / f"case{i}.nii.gz", ann)
    return tmp_path


def _run(archive, net, **kw):
    cases = cases_from_folder(archive / "cines", archive / "ann")
    pred = VideoPredictor.with_defaults(net, 32, 4, runtime="torch", tune_steps=0)  # tuning: tests/engines
    return run_batch(cases, archive / "out", net, 32, 4, pred, outputs=("nifti", "csv"), progress=False, **kw)


def test_batch_resumes_by_manifest_and_reports_failures(archive, tiny_net):
    summary = _run(archive, tiny_net)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (3, 0, 0)
    assert all(read_manifest(archive / "out" / f"case{i}") for i in range(3))
    (archive / "out" / "case1" / "mask.nii.gz").write_bytes(b"damaged")  # no longer matches its manifest
    (archive / "cines" / "case3.nii.gz").write_bytes(b"not a nifti")
    write_nifti(archive / "ann" / "case3.nii.gz", np.zeros((6, 48, 48), np.uint8))
    with pytest.raises(BatchIncomplete, match="1 of 4 case.*case3: CineReadError"):
        _run(archive, tiny_net)
    rows = json.loads((archive / "out" / "summary.json").read_text())["results"]
    assert [(r["id"], r["status"]) for r in rows] == [("case0", "skipped"), ("case1", "done"), ("case2", "skipped"),
                                                      ("case3", "failed")]
    assert (archive / "out" / "summary.csv").read_text().count("\n") == 5


def test_cases_need_their_annotation(archive):
    (archive / "cines" / "lonely.nii.gz").write_bytes(b"x")
    with pytest.raises(ValueError, match="no annotation named like the cine.*lonely"):
        cases_from_folder(archive / "cines", archive / "ann")
    assert shard(list(range(7)), 1, 3) == [1, 4]


def test_torchrun_shards_the_cases_and_rank0_writes_one_summary(archive, tiny_net):
    from medvos.networks.checkpoint import ModelSpec

    ckpt = archive / "model.pt"
    torch.save({"model": tiny_net.state_dict(), "spec": ModelSpec(tiny_net, 32).state_dict()}, ckpt)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "monai.bundle", "run",
           "batch_inferring", "--config_file",
           repr([str(REPO / f"bundle/configs/{n}.yaml") for n in ("train", "inference", "batch_inference")]),
           "--checkpoint", str(ckpt), "--cines", str(archive / "cines"), "--annotations", str(archive / "ann"),
           "--batch_dir", str(archive / "out"), "--batch_outputs", "['nifti', 'csv']",
           "--output_dir", str(archive / "eval")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((archive / "out" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["done"] == 3
    ranks = sorted((archive / "out" / ".ranks").glob("rank*.json"))
    assert [len(json.loads(p.read_text())) for p in ranks] == [2, 1]  # rank 0: cases 0, 2; rank 1: case 1
