"""Reuse between passes (self-annotation's second pass): the first pass's flows and query encodings, kept within a
budget, give the second pass exactly the result it would compute without them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_memory_tree import ColourTemplateNet, distractor_video
from test_motion import _Recording

from medvos.inference.motion import MotionAwarePropagator
from medvos.inference.predictor import VideoPredictor
from medvos.inference.propagator import FewShotPropagator
from medvos.inference.reuse import PassCache

SIZE = 48


def test_a_pass_cache_computes_once_within_its_budget():
    computed = []

    def compute(n: int):
        computed.append(n)
        return np.zeros(n, np.float32), torch.zeros(n)  # 8n bytes

    cache = PassCache(budget_mb=100 / 2**20)  # 100 bytes
    a = cache.get("a", lambda: compute(5))  # 40 bytes: kept
    assert cache.get("a", lambda: compute(5)) is a and computed == [5] and cache.hits == 1
    with pytest.raises(ValueError):
        a[0][0] = 1  # kept arrays are read-only
    cache.get("b", lambda: compute(5))  # 80 bytes in all: kept
    cache.get("c", lambda: compute(5))  # over the budget: computed, not kept
    cache.get("c", lambda: compute(5))
    assert computed == [5, 5, 5, 5] and len(cache) == 2 and cache.used == 80
    cache.storing = False
    cache.get("d", lambda: compute(1))
    assert "d" not in cache._items and cache.get("b", lambda: compute(5)) is not None and computed[-1] == 1
    with pytest.raises(ValueError, match="budget"):
        PassCache(-1)


class _CountingFlow:
    def __init__(self, flow):
        self.flow, self.preset, self.calls = flow, flow.preset, 0

    def __call__(self, src, dst):
        self.calls += 1
        return self.flow(src, dst)


def test_a_second_motion_pass_reuses_every_flow_and_gives_the_same_result():
    frames, labels = distractor_video(appear=10**6)
    net = ColourTemplateNet().eval()
    prop = MotionAwarePropagator(FewShotPropagator(net, 64, 4))
    prop.flow, prop.check = _CountingFlow(prop.flow), _CountingFlow(prop.check)
    ref, _, _ = prop.propagate(frames, torch.from_numpy(labels), [3, 20])
    computed = prop.flow.calls + prop.check.calls
    cache = PassCache()
    prop.reuse_from(cache)
    first, _, _ = prop.propagate(frames, torch.from_numpy(labels), [3, 20])
    assert prop.flow.calls + prop.check.calls == 2 * computed and len(cache) > 0
    cache.storing = False
    second, _, _ = prop.propagate(frames, torch.from_numpy(labels), [3, 20])
    assert prop.flow.calls + prop.check.calls == 2 * computed  # none computed again
    assert np.array_equal(ref, first) and np.array_equal(ref, second)
    assert prop.base.reuse is cache  # the base takes query encodings from it (where its encoder is shareable)


def test_frames_outside_the_cue_frames_start_a_pass_without_the_annotation_cue():
    """Self-annotated frames with ``self_annotate_cue`` off: their passes carry no annotation cue and compute no flow
    from them; the user's frames keep it."""
    frames, labels = distractor_video(appear=10**6)
    net = ColourTemplateNet().eval()
    rule = _Recording()
    object.__setattr__(rule, "calls", [])
    prop = MotionAwarePropagator(FewShotPropagator(net, 64, 4), rule)
    prop.cue_frames = {3}
    prop.propagate(frames, torch.from_numpy(labels), [3, 20])
    # forward from 3 over 4..19 and backward from 3 over 2..0 with the cue; from 20 (21..23, 19..4) without
    cued = [a is not None for a in rule.calls]
    assert len(cued) == 16 + 3 + 16 + 3 and sum(cued) == 16 + 3


def test_the_predictor_reuses_the_first_pass_and_gives_the_same_masks(endo_nifti):
    """`inferring`'s predictor with self-annotation, exported network (the tuned copies share its query graph): the
    second pass takes flows and query encodings from the first and its masks equal those of a predictor that keeps
    nothing (``pass_cache_mb: 0``); one pass keeps nothing."""
    from medvos.networks.image_model import FewShotSegNet

    folder, _, labels = endo_nifti
    torch.manual_seed(0)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16, neck_levels=2, neck_depth=2).eval()
    out, states = {}, {}
    for budget in (0, 256):
        pred = VideoPredictor.with_defaults(net, SIZE, 4, runtime="onnxruntime", tune_steps=2, tune_views=4,
                                            self_annotate=1, pass_cache_mb=budget)
        state = pred.init_state(str(folder / "cine.nii.gz"))
        pred.add_annotation(state, 0, labels[0])
        out[budget] = np.concatenate([w.labels for w in pred.propagate(state)])
        states[budget] = state
    assert states[0].reuse is None and states[256].trusted
    kinds = {key[0] for key in states[256].reuse._items}
    assert kinds == {"flow", "query"} and states[256].reuse.hits > 0
    assert np.array_equal(out[0], out[256])
    one = VideoPredictor.with_defaults(net, SIZE, 4, runtime="onnxruntime", tune_steps=0, self_annotate=0)
    state = one.init_state(str(folder / "cine.nii.gz"))
    one.add_annotation(state, 0, labels[0])
    list(one.propagate(state))
    assert state.reuse is None
    with pytest.raises(ValueError, match="pass_cache_mb"):
        VideoPredictor(lambda: None, 4, pass_cache_mb=-1)
