"""Self-annotation: a first pass's most trusted frames taken as annotated for a second pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvos.inference.predictor import VideoPredictor
from medvos.inference.propagator import Window

SIZE = 48


class Scripted:
    """A strategy that records the frames it is given as support and outputs a scripted pass: ``first`` (labels,
    confidence, drift per frame) from the user's frames alone (a first pass), else empty masks of confidence 0.5."""

    user = {0, 5}  # the frames the tests annotate

    def __init__(self, first: tuple[np.ndarray, np.ndarray, np.ndarray], clip: int) -> None:
        self.first, self.clip, self.calls = first, clip, []

    def supports(self, annotated):
        self.calls.append(sorted(annotated))
        return []

    def stream(self, windows, supports):
        first_pass = set(self.calls[-1]) <= self.user  # only the user's frames support it
        labels, conf, drift = self.first if first_pass else (
            np.zeros_like(self.first[0]), np.full_like(self.first[1], 0.5), np.zeros_like(self.first[2]))
        for start, x in windows:
            n = len(x)
            yield Window(start, labels[start : start + n].copy(), conf[start : start + n].copy(), {},
                         drift[start : start + n].copy())


@pytest.fixture()
def scripted(endo_nifti):
    """A predictor over :class:`Scripted` for the 12-frame cine annotated on frame 0: in the first pass frame 3 is
    the most trusted of frames 1-6 (frame 2 is surer but drifts), frame 8 of frames 7-11 (frame 10 is surer but
    empty)."""
    folder, _, labels = endo_nifti
    t, (h, w) = labels.shape[0], labels.shape[1:]
    masks = np.ones((t, h, w), np.uint8)
    masks[10] = 0
    conf = np.full(t, 0.6, np.float32)
    conf[[2, 3, 8, 10]] = [0.95, 0.9, 0.8, 0.99]
    drift = np.zeros(t, np.float32)
    drift[2] = 0.5
    made = []

    def make():
        made.append(Scripted((masks, conf, drift), 4))
        return made[-1]

    return folder, labels, made, make, (masks, conf, drift)


def test_the_most_trusted_frame_of_each_stretch_is_taken(scripted):
    folder, labels, made, make, (masks, conf, drift) = scripted
    pred = VideoPredictor(make, 4, self_annotate=2)
    state = pred.init_state(str(folder / "cine.nii.gz"))
    pred.add_annotation(state, 0, labels[0])
    stats: dict[str, float] = {}
    out = list(pred.propagate(state, stats=stats))
    strategy = made[0]
    assert strategy.calls == [[0], [0, 3, 8]]  # the second pass starts from the annotation and frames 3 and 8
    got = np.concatenate([w.labels for w in out])
    assert np.array_equal(got[0], labels[0])
    assert np.array_equal(got[[3, 8]], masks[[3, 8]])  # the self-annotated frames keep the first pass's labels...
    assert not got[[1, 2, 4, 5, 6, 7, 9, 10, 11]].any()  # ...the others are the second pass's
    confidence = np.concatenate([w.confidence for w in out])
    assert confidence[0] == 1.0 and np.allclose(confidence[[3, 8]], [0.9, 0.8]) and confidence[1] == 0.5
    assert np.concatenate([w.annotated for w in out]).nonzero()[0].tolist() == [0]  # only the user's is annotated
    assert "self-annotation pass" in stats
    list(pred.propagate(state))  # the same annotation: the picks are kept, one pass
    assert strategy.calls[2:] == [[0, 3, 8]]
    pred.add_annotation(state, 5, labels[5])  # a new annotation: a new first pass (frames 1-4 and 6-11)
    list(pred.propagate(state))
    assert strategy.calls[3:] == [[0, 5], [0, 3, 5, 8]]


def test_one_pass_where_an_annotation_marks_an_object_absent(scripted):
    """A frame annotated without an object says it is absent there and on the frames nearest to it: a self-annotated
    frame would move that boundary, so such annotations propagate in one pass."""
    folder, labels, made, make, _ = scripted
    pred = VideoPredictor(make, 4, self_annotate=2)
    state = pred.init_state(str(folder / "cine.nii.gz"))
    pred.add_annotation(state, 0, labels[0])
    pred.add_annotation(state, 5, np.zeros_like(labels[5]))
    list(pred.propagate(state))
    assert made[0].calls == [[0, 5]] and not state.trusted


def test_trust_threshold_and_off(scripted):
    folder, labels, made, make, _ = scripted
    strict = VideoPredictor(make, 4, self_annotate=2, self_annotate_trust=0.85)
    state = strict.init_state(str(folder / "cine.nii.gz"))
    strict.add_annotation(state, 0, labels[0])
    list(strict.propagate(state))
    assert made[0].calls == [[0], [0, 3]]  # frame 8's trust 0.8 is below 0.85
    off = VideoPredictor(make, 4)
    state = off.init_state(str(folder / "cine.nii.gz"))
    off.add_annotation(state, 0, labels[0])
    list(off.propagate(state))
    assert made[1].calls == [[0]]
    with pytest.raises(ValueError, match="self_annotate"):
        VideoPredictor(make, 4, self_annotate=-1)
    with pytest.raises(ValueError, match="self_annotate_trust"):
        VideoPredictor(make, 4, self_annotate=1, self_annotate_trust=1.5)


def test_the_second_pass_is_tuned_on_the_self_annotated_frames(endo_nifti):
    """With `inferring`'s predictor the network is tuned for each pass: first on the annotation, then on it and the
    self-annotated frame; ``self_annotate`` comes from inference.yaml unless given."""
    from medvos.inference.defaults import inference_defaults
    from medvos.networks.image_model import FewShotSegNet

    folder, _, labels = endo_nifti
    torch.manual_seed(0)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16).eval()
    assert VideoPredictor.with_defaults(net, SIZE, 4, runtime="torch", tune_steps=0).self_annotate == \
        int(inference_defaults()["self_annotate"])
    pred = VideoPredictor.with_defaults(net, SIZE, 4, runtime="torch", tune_steps=2, self_annotate=1,
                                        self_annotate_trust=0.0)
    tuned_on, tune = [], pred.tune

    def recording(predictor, state):
        tuned_on.append(sorted(state.supporting))
        return tune(predictor, state)

    pred.tune = recording
    state = pred.init_state(str(folder / "cine.nii.gz"))
    pred.add_annotation(state, 0, labels[0])
    out = np.concatenate([w.labels for w in pred.propagate(state)])
    assert len(tuned_on) == 2 and tuned_on[0] == [0] and len(tuned_on[1]) == 2 and tuned_on[1][0] == 0
    picked = tuned_on[1][1]
    assert np.array_equal(out[picked], state.trusted[picked][0]) and out[picked].any()


@pytest.mark.parametrize("warm", [False, True])
def test_the_second_tuning_starts_from_the_first_when_warm(endo_nifti, monkeypatch, warm):
    """``self_annotate_warm``: the second pass's tuning starts from the network the first tuning returned; off, from
    the given network, as the first does. A new set of user annotations starts cold again."""
    from medvos.inference import tuning as tuning_module
    from medvos.networks.image_model import FewShotSegNet

    folder, _, labels = endo_nifti
    torch.manual_seed(0)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16).eval()
    starts, returned, call = [], [], tuning_module.AnnotationTuning.__call__

    def recording(self, network, images, lab):
        starts.append(network)
        returned.append(call(self, network, images, lab))
        return returned[-1]

    monkeypatch.setattr(tuning_module.AnnotationTuning, "__call__", recording)
    pred = VideoPredictor.with_defaults(net, SIZE, 4, runtime="torch", tune_steps=1, self_annotate=1,
                                        self_annotate_warm=warm)
    state = pred.init_state(str(folder / "cine.nii.gz"))
    pred.add_annotation(state, 0, labels[0])
    for _ in pred.propagate(state):
        pass
    assert len(starts) == 2 and starts[0] is net
    assert (starts[1] is returned[0]) == warm and (starts[1] is net) == (not warm)
    pred.add_annotation(state, 6, labels[6])  # a correction: the first pass is tuned from the given network again
    for _ in pred.propagate(state):
        pass
    assert len(starts) == 4 and starts[2] is net and (starts[3] is returned[2]) == warm


def test_the_second_tuning_takes_its_own_steps(endo_nifti, monkeypatch):
    """``self_annotate_tune_share``: the second pass's tuning runs that share of ``tune_steps`` (at least one step),
    the first ``tune_steps``; a correction's first tuning runs ``tune_steps`` again. A share of 0 is refused."""
    from medvos.inference import tuning as tuning_module
    from medvos.networks.image_model import FewShotSegNet

    folder, _, labels = endo_nifti
    torch.manual_seed(0)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16).eval()
    steps, call = [], tuning_module.AnnotationTuning.__call__

    def recording(self, network, images, lab):
        steps.append(self.steps)
        return call(self, network, images, lab)

    monkeypatch.setattr(tuning_module.AnnotationTuning, "__call__", recording)
    pred = VideoPredictor.with_defaults(net, SIZE, 4, runtime="torch", tune_steps=4, self_annotate=1,
                                        self_annotate_tune_share=0.5)
    state = pred.init_state(str(folder / "cine.nii.gz"))
    pred.add_annotation(state, 0, labels[0])
    for _ in pred.propagate(state):
        pass
    pred.add_annotation(state, 6, labels[6])
    for _ in pred.propagate(state):
        pass
    assert steps == [4, 2, 4, 2]
    pred.self_annotate_tune_share = 0.01  # at least one step
    state = pred.init_state(str(folder / "cine.nii.gz"))
    pred.add_annotation(state, 0, labels[0])
    for _ in pred.propagate(state):
        pass
    assert steps[-2:] == [4, 1]
    with pytest.raises(ValueError, match="self_annotate_tune_share"):
        VideoPredictor.with_defaults(net, SIZE, 4, runtime="torch", self_annotate_tune_share=0)
