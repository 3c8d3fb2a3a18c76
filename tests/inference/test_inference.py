"""Inference: every input format in, every output written and re-read; multi-object, multi-annotation fusion."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

import torch

from medvos.inference.predictor import VideoPredictor
from medvos.inference.propagator import FewShotPropagator, Support
from medvos.inference.workflow import run_inference
from medvos.io import MaskMismatchError, read_cine, read_mask
from medvos.io.dicom_seg import read_dicom_seg
from medvos.io.writers import write_nifti, write_png_frames, write_video
from medvos.data.synthetic_dicom import write_dicom_cine, write_dicom_series


def _write(fmt: str, root, cine):
    if fmt == "dicom":
        return write_dicom_cine(root / "v.dcm", cine.frames)
    if fmt == "dicom-series":
        write_dicom_series(root / "series", cine.frames)
        return root / "series"
    if fmt == "nifti":
        return write_nifti(root / "v.nii.gz", cine.frames, frame_time_ms=40.0)
    if fmt == "itk":
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(cine.frames[:, 0])), str(root / "v.mhd"))
        return root / "v.mhd"
    if fmt == "video":
        return write_video(root / "v.avi", np.repeat(cine.frames, 3, 1), fps=10)
    write_png_frames(root / "frames", cine.frames)
    return root / "frames"


@pytest.mark.parametrize("fmt", ["dicom", "dicom-series", "nifti", "itk", "video", "frames"])
def test_inference_each_format(tmp_path, tiny_net, echo_small, fmt):
    src = _write(fmt, tmp_path, echo_small)
    ann = echo_small.labels.copy()
    ann[1:] = 0  # only frame 0 annotated
    write_nifti(tmp_path / "ann.nii.gz", ann)
    res = run_inference(str(src), str(tmp_path / "ann.nii.gz"), tmp_path / "out", tiny_net, image_size=32,
                        clip_length=4, overlay_format="gif", progress=False)
    assert res["annotated"] == [0]
    cine = read_cine(src)
    out = tmp_path / "out"
    nifti = read_mask(out / "mask.nii.gz", like=cine)
    np.testing.assert_array_equal(nifti.labels, res["labels"])
    np.testing.assert_array_equal(nifti.labels[0], echo_small.labels[0])  # annotated frame kept exactly
    if fmt == "nifti":
        import nibabel as nib

        np.testing.assert_allclose(nib.load(out / "mask.nii.gz").affine, nib.load(src).affine)
    assert len(list((out / "masks").glob("*.png"))) == 6
    assert read_cine(out / "overlay.gif").num_frames == 6
    assert len((out / "confidence.csv").read_text().strip().splitlines()) == 7
    if fmt.startswith("dicom"):
        seg = pydicom.dcmread(out / "mask_seg.dcm")
        assert seg.Modality == "SEG" and seg.pixel_array.shape[0] == int(seg.NumberOfFrames)
        np.testing.assert_array_equal(read_dicom_seg(out / "mask_seg.dcm"), res["labels"])
    else:
        assert not (out / "mask_seg.dcm").exists()


def test_highdicom_warm_up_starts_after_the_first_window(tmp_path, tiny_net, echo_small, monkeypatch):
    """The DICOM SEG output's highdicom import runs in a thread only once the predictor has yielded its first window:
    before that, test-time tuning parses its config, and MONAI's ComponentLocator iterates sys.modules, which a
    concurrent import changes (a run failed with "dictionary changed size during iteration")."""
    from medvos.inference.predictor import VideoPredictor
    from medvos.io import dicom_seg

    src = _write("dicom", tmp_path, echo_small)
    ann = echo_small.labels.copy()
    ann[1:] = 0
    write_nifti(tmp_path / "ann.nii.gz", ann)
    events = []
    monkeypatch.setattr(dicom_seg, "warm_up", lambda: events.append("warm-up"))
    propagate = VideoPredictor.propagate

    def recording(self, state, **kwargs):
        for k, win in enumerate(propagate(self, state, **kwargs)):
            events.append(f"window {k}")
            yield win

    monkeypatch.setattr(VideoPredictor, "propagate", recording)
    run_inference(str(src), str(tmp_path / "ann.nii.gz"), tmp_path / "out", tiny_net, image_size=32, clip_length=4,
                  outputs=("dicom_seg",), progress=False)
    assert events[0] == "window 0" and events.count("warm-up") == 1
    assert (tmp_path / "out" / "mask_seg.dcm").exists()


def test_multilabel_and_bad_annotations(tmp_path, tiny_net, echo_small):
    write_nifti(tmp_path / "v.nii.gz", echo_small.frames)
    multi = np.zeros_like(echo_small.labels)
    multi[0] = echo_small.labels[0]
    multi[0, :6, :6] = 2
    write_nifti(tmp_path / "multi.nii.gz", multi)
    res = run_inference(str(tmp_path / "v.nii.gz"), str(tmp_path / "multi.nii.gz"), tmp_path / "o", tiny_net,
                        image_size=32, clip_length=4, outputs=["nifti"], progress=False, threshold=0.0)
    assert set(np.unique(res["labels"][1:])) <= {0, 1, 2} and 2 in np.unique(res["labels"][1:])
    write_nifti(tmp_path / "empty.nii.gz", np.zeros_like(multi))
    with pytest.raises(MaskMismatchError, match="empty.nii.gz: no annotated frame"):
        run_inference(str(tmp_path / "v.nii.gz"), str(tmp_path / "empty.nii.gz"), tmp_path / "o2", tiny_net,
                      image_size=32, progress=False)
    with pytest.raises(MaskMismatchError, match=r"annotated frame\(s\) \[3\] are empty"):
        run_inference(str(tmp_path / "v.nii.gz"), str(tmp_path / "multi.nii.gz"), tmp_path / "o3", tiny_net,
                      image_size=32, annotated=[3], progress=False)


def test_annotated_frame_without_the_object_says_it_is_absent(tmp_path, tiny_net, echo_small):
    """Frame 5 annotated empty: objects 1 and 2 are absent there and on the frames nearer to it than to frame 0
    (appearance only, and with motion, where the forward and backward passes meet; the tiny untrained network needs
    threshold 0 to find anything by appearance); frame 0 alone propagates into those frames."""
    write_nifti(tmp_path / "v.nii.gz", echo_small.frames)
    multi = np.zeros_like(echo_small.labels)
    multi[0] = echo_small.labels[0]
    multi[0, :6, :6] = 2
    write_nifti(tmp_path / "multi.nii.gz", multi)
    t = len(multi)
    for motion in (False, True):
        thr = 0.5 if motion else 0.0
        pred = VideoPredictor.with_defaults(tiny_net, 32, 4, threshold=thr, motion=motion, memory_tree=False,
                                            runtime="torch", tune_steps=0)
        kw = dict(image_size=32, clip_length=4, outputs=(), progress=False, threshold=thr, predictor=pred)
        absent = run_inference(str(tmp_path / "v.nii.gz"), str(tmp_path / "multi.nii.gz"), tmp_path / "a", tiny_net,
                               annotated=[0, 5], **kw)
        assert absent["annotated"] == [0, 5] and not absent["labels"][3:t].any(), motion
        assert absent["labels"][1:3].any() and (absent["labels"][0] == multi[0]).all()
        alone = run_inference(str(tmp_path / "v.nii.gz"), str(tmp_path / "multi.nii.gz"), tmp_path / "b", tiny_net,
                              annotated=[0], **kw)
        assert alone["labels"][3:t].any()


def test_nearest_and_fused_annotations():
    prop = FewShotPropagator(torch.nn.Linear(1, 1), image_size=8, clip_length=4, fusion="nearest")
    supports = [Support(1, [0], None), Support(1, [10], None)]
    p0, p10 = torch.full((12, 2, 2), 0.2), torch.full((12, 2, 2), 0.9)
    out = prop._combine(0, [p0, p10], supports)[1]
    assert torch.allclose(out[:6], torch.tensor(0.2)) and torch.allclose(out[6:], torch.tensor(0.9))  # 5: tie->0
    prop.fusion = "fuse"
    fused = prop._combine(0, [p0, p10], supports)[1]
    assert fused[0].mean() < fused[11].mean() and 0.2 < float(fused[5].mean()) < 0.9


def test_nearest_fusion_runs_only_the_supports_it_reads(tiny_net, echo_small):
    """With ``nearest`` a window runs the network for the supports nearest to its frames only (one per window away
    from the midpoint between annotations), and the probabilities equal those from running every support; ``fuse``
    runs every support."""
    frames = torch.from_numpy(np.concatenate([echo_small.frames] * 2).astype(np.float32) / 255.0).expand(-1, 3, -1, -1)
    labels = torch.from_numpy(np.concatenate([echo_small.labels] * 2))
    calls: list[int] = []
    original = type(tiny_net).segment_encoded

    def counted(self, q, support, size):  # noqa: ANN001
        calls.append(1)
        return original(self, q, support, size)

    results = {}
    for fusion in ("nearest", "fuse"):
        prop = FewShotPropagator(tiny_net, image_size=32, clip_length=4, fusion=fusion)
        calls.clear()
        type(tiny_net).segment_encoded = counted
        try:
            results[fusion] = prop.propagate(frames, labels, [0, len(frames) - 1])
        finally:
            type(tiny_net).segment_encoded = original
        results[fusion + " calls"] = len(calls)
    windows = -(-len(frames) // 4)
    assert results["fuse calls"] == 2 * windows
    assert windows <= results["nearest calls"] < 2 * windows  # only the window holding the midpoint runs both
    prop = FewShotPropagator(tiny_net, image_size=32, clip_length=4, fusion="nearest")
    prop._used = lambda start, n, supports: set(range(len(supports)))  # every support computed: the old path
    every = prop.propagate(frames, labels, [0, len(frames) - 1])
    for a, b in zip(results["nearest"], every):
        np.testing.assert_array_equal(a, b)


def test_backward_propagation_from_middle_frame(tmp_path, tiny_net, echo_small):
    write_nifti(tmp_path / "v.nii.gz", echo_small.frames)
    ann = np.zeros_like(echo_small.labels)
    ann[3] = echo_small.labels[3]
    write_nifti(tmp_path / "a.nii.gz", ann)
    res = run_inference(str(tmp_path / "v.nii.gz"), str(tmp_path / "a.nii.gz"), tmp_path / "o", tiny_net,
                        image_size=32, clip_length=4, outputs=["csv"], progress=False)
    assert res["annotated"] == [3] and res["confidence"][3] == 1.0 and len(res["confidence"]) == 6


@pytest.mark.realdata
def test_inference_on_real_jpeg_ultrasound_dicom_and_cvc_frames(tmp_path, tiny_net):
    """The real JPEG-compressed colour US cine (DICOM SEG out) and a real CVC-ClinicDB frame folder (streamed)."""
    from conftest import shared

    from medvos.io.formats import list_frame_files

    dcm = shared("us_cine_unlabeled") / "color3d_jpeg_baseline.dcm"
    cine = read_cine(dcm)
    ann = np.zeros((cine.num_frames, *cine.size), np.uint8)
    ann[0, 200:280, 280:360] = 1  # a box on frame 0 (no labels exist for this cine)
    write_nifti(tmp_path / "ann.nii.gz", ann)
    res = run_inference(str(dcm), str(tmp_path / "ann.nii.gz"), tmp_path / "us", tiny_net, image_size=32, clip_length=8,
                        outputs=("dicom_seg", "csv"), progress=False)
    assert res["labels"].shape == (120, 480, 640) and np.array_equal(res["labels"][0], ann[0])
    seg = pydicom.dcmread(tmp_path / "us" / "mask_seg.dcm")
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    frames = list_frame_files(shared("cvc_clinicdb") / "images")[:25]  # real colonoscopy frames, streamed
    (tmp_path / "cvc_mask").mkdir()
    first = read_cine([frames[0]])
    m = np.zeros((1, *first.size), np.uint8)
    m[0, 100:150, 150:200] = 255
    write_png_frames(tmp_path / "cvc_mask", m, names=[frames[0].stem])
    res = run_inference([str(f) for f in frames], str(tmp_path / "cvc_mask"), tmp_path / "cvc", tiny_net,
                        image_size=32, clip_length=8, outputs=("png",), keep_labels=False, progress=False)
    assert res["labels"] is None and len(res["confidence"]) == len(frames)
    assert len(list((tmp_path / "cvc" / "masks").glob("*.png"))) == len(frames)


def test_predictor_owns_each_videos_state(tmp_path, tiny_net, echo_small):
    """One predictor, two videos interleaved (issue 17 item 2): each video's annotations and strategy memory live in
    its own state, so the windows equal those of each video alone; annotated frames keep their labels."""
    write_nifti(tmp_path / "a.nii.gz", echo_small.frames)
    write_nifti(tmp_path / "b.nii.gz", echo_small.frames[::-1].copy())
    pred = VideoPredictor.with_defaults(tiny_net, 32, 4, threshold=0.5, memory_tree=True, motion=True,
                                        runtime="torch", tune_steps=0)

    def alone(path, labels):  # noqa: ANN001, ANN202
        state = pred.init_state(str(path))
        pred.add_annotation(state, 0, labels)
        return [w.labels.copy() for w in pred.propagate(state)]

    ref_a = alone(tmp_path / "a.nii.gz", echo_small.labels[0])
    ref_b = alone(tmp_path / "b.nii.gz", echo_small.labels[-1])
    sa, sb = pred.init_state(str(tmp_path / "a.nii.gz")), pred.init_state(str(tmp_path / "b.nii.gz"))
    pred.add_annotation(sa, 0, echo_small.labels[0])
    pred.add_annotation(sb, 0, echo_small.labels[-1])
    got_a, got_b = [], []
    for wa, wb in zip(pred.propagate(sa), pred.propagate(sb)):
        got_a.append(wa.labels.copy())
        got_b.append(wb.labels.copy())
        if wa.start == 0:
            assert wa.annotated[0] and not wa.annotated[1:].any() and wb.confidence[0] == 1.0
    for got, ref in ((got_a, ref_a), (got_b, ref_b)):
        assert len(got) == len(ref) and all(np.array_equal(g, r) for g, r in zip(got, ref))
    np.testing.assert_array_equal(got_a[0][0], echo_small.labels[0])
    with pytest.raises(MaskMismatchError, match="frame 99 is not in the video"):
        pred.add_annotation(sa, 99, echo_small.labels[0])


def test_outputs_are_sinks_and_a_new_one_plugs_in(tmp_path, tiny_net, echo_small):
    """Issue 17 item 2: every output is a sink named in `sinks` (inference.yaml); a sink of one's own is fed every
    window in frame order and its file joins the result set (and its manifest)."""
    from medvos.inference.sinks import SINKS, Sink
    from medvos.io.result_set import verify

    class FrameLog(Sink):
        file_name = "frames.txt"

        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
            super().__init__(*args, **kwargs)
            self.seen: list[int] = []

        def append(self, win):  # noqa: ANN001
            self.seen += range(win.start, win.start + len(win.labels))

        def close(self):
            self.path.write_text(",".join(map(str, self.seen)))

    write_nifti(tmp_path / "v.nii.gz", echo_small.frames)
    write_nifti(tmp_path / "m.nii.gz", echo_small.labels)
    out = tmp_path / "out"
    run_inference(str(tmp_path / "v.nii.gz"), str(tmp_path / "m.nii.gz"), out, tiny_net, image_size=32, clip_length=4,
                  outputs=("csv", "frames"), sinks={**SINKS, "frames": FrameLog}, annotated=[0], progress=False)
    assert (out / "frames.txt").read_text() == ",".join(str(t) for t in range(len(echo_small.frames)))
    assert (out / "confidence.csv").is_file() and not (out / "mask.nii.gz").exists()
    assert verify(out) == []
    with pytest.raises(ValueError, match="unknown outputs"):
        run_inference(str(tmp_path / "v.nii.gz"), str(tmp_path / "m.nii.gz"), tmp_path / "o2", tiny_net,
                      image_size=32, outputs=("frames",), progress=False)
