"""A run's outputs are one result set (issue 14, item 1): staged, moved into place together with a manifest; a
failed, killed or bad-input run leaves nothing under a final name; stale temporary files are removed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from medvos.inference.workflow import run_inference
from medvos.io import CineReadError
from medvos.io.result_set import MANIFEST, STAGING_PREFIX, ResultSet, read_manifest, sha256_file, verify
from medvos.io.writers import write_nifti, write_png_frames


def _cine(tmp_path, echo_small, nan_frame: int | None = None):
    frames = echo_small.frames.astype(np.float32).copy()
    if nan_frame is not None:
        frames[nan_frame, 0, 3, 3] = np.nan
    write_nifti(tmp_path / "cine.nii.gz", frames, dtype=np.float32)
    ann = echo_small.labels.copy()
    ann[1:] = 0
    write_nifti(tmp_path / "ann.nii.gz", ann)
    return str(tmp_path / "cine.nii.gz"), str(tmp_path / "ann.nii.gz")


def _run(tmp_path, echo_small, net, out, **kw):
    video, ann = _cine(tmp_path, echo_small, kw.pop("nan_frame", None))
    return run_inference(video, ann, out, net, image_size=32, clip_length=2, progress=False, **kw)


def test_manifest_lists_every_file_with_its_hash(tmp_path, tiny_net, echo_small):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    out = tmp_path / "out"
    _run(tmp_path, echo_small, tiny_net, out, overlay_format="gif", checkpoint=ckpt)
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["format"] == "medvos-result-set/1"
    assert manifest["checkpoint"] == {"path": str(ckpt), "sha256": sha256_file(ckpt)}
    assert manifest["input"]["annotated_frames"] == [0] and manifest["input"]["frames"] == 6
    assert set(manifest["files"]) == {"mask.nii.gz", "overlay.gif", "confidence.csv",
                                      *(f"masks/{t:04d}.png" for t in range(6))}
    assert verify(out) == []
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or temp files left
    (out / "masks" / "0003.png").write_bytes(b"changed")
    assert any("0003.png" in p for p in verify(out))


def test_bad_pixels_in_a_late_frame_leave_no_output(tmp_path, tiny_net, echo_small):
    """NaN in the last frame used to be reported after the earlier PNGs were written."""
    out = tmp_path / "out"
    with pytest.raises(CineReadError, match="NaN or infinite"):
        _run(tmp_path, echo_small, tiny_net, out, nan_frame=5)
    assert not out.exists() or list(out.iterdir()) == []


def test_a_failure_mid_run_leaves_no_output(tmp_path, tiny_net, echo_small, monkeypatch):
    """A writer failing on frame 4 of 6 (after masks 0-3 and the NIfTI's first windows were written)."""
    import medvos.inference.sinks as wf

    real, shown = wf.overlay, []

    def failing_overlay(frames, labels):  # noqa: ANN001, ANN202
        shown.extend(frames)
        if len(shown) > 4:
            raise OSError(28, "No space left on device")
        return real(frames, labels)

    monkeypatch.setattr(wf, "overlay", failing_overlay)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space"):
        _run(tmp_path, echo_small, tiny_net, out)
    assert len(shown) > 4 and list(out.iterdir()) == []


def test_rerun_replaces_the_old_set_whole(tmp_path, tiny_net, echo_small):
    """Old PNGs never mix with new ones; an old set's output that the new run does not write goes with the set;
    files that are not the set's stay."""
    out = tmp_path / "out"
    _run(tmp_path, echo_small, tiny_net, out, overlay_format="gif")
    (out / "masks" / "9999.png").write_bytes(b"old")  # e.g. a longer cine's frame from an earlier run
    (out / "notes.txt").write_text("mine")
    _run(tmp_path, echo_small, tiny_net, out, outputs=("nifti", "png", "csv"))
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{t:04d}.png" for t in range(6)]
    assert not (out / "overlay.gif").exists() and (out / "notes.txt").read_text() == "mine"
    assert verify(out) == []


def test_a_failed_rerun_keeps_the_previous_set(tmp_path, tiny_net, echo_small):
    out = tmp_path / "out"
    _run(tmp_path, echo_small, tiny_net, out)
    before = read_manifest(out)
    with pytest.raises(CineReadError):
        _run(tmp_path, echo_small, tiny_net, out, nan_frame=4)
    assert read_manifest(out) == before and verify(out) == []


def test_a_killed_run_leaves_no_final_outputs_and_the_next_run_cleans_up(tmp_path, echo_small):
    """SIGKILL mid-run: only the staging folder remains (no manifest, no mask.nii.gz); the next run removes it and
    stale hidden temp files."""
    out = tmp_path / "out"
    video, ann = _cine(tmp_path, echo_small)
    script = textwrap.dedent(f"""
        import time, numpy as np
        from medvos.io.result_set import ResultSet
        with ResultSet({str(out)!r}, ("mask.nii.gz", "masks"), {{}}) as rs:
            rs.path("mask.nii.gz").write_bytes(b"partial")
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "mask.nii.gz").exists() and read_manifest(out) is None
    assert [p.name.startswith(STAGING_PREFIX) for p in out.iterdir()] == [True]
    (out / ".mask.nii.gz.abc123.tmp.nii.gz").write_bytes(b"stale")  # a temp file of an older version's writer
    with ResultSet(out, ("mask.nii.gz",), {}) as rs:
        rs.path("mask.nii.gz").write_bytes(b"whole")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "mask.nii.gz"]
    assert json.loads((out / MANIFEST).read_text())["files"]["mask.nii.gz"]["bytes"] == 5


def test_tiny_frames_are_refused_before_any_output(tmp_path, tiny_net):
    frames = np.random.default_rng(0).integers(0, 255, (4, 1, 1, 1)).astype(np.uint8)
    write_png_frames(tmp_path / "frames", frames)
    write_png_frames(tmp_path / "ann", np.ones((1, 1, 1), np.uint8) * 255, names=["0000"])
    with pytest.raises(CineReadError, match="1x1 px are too small"):
        run_inference(str(tmp_path / "frames"), str(tmp_path / "ann"), tmp_path / "out", tiny_net, image_size=32,
                      clip_length=2, progress=False)
    assert not (tmp_path / "out").exists()
