"""The spill stack (what a backward pass waits on, bounded in memory) and the motion-aware propagation through it:
the same results whether the waiting frames stay in memory or go to a temporary file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_memory_tree import ColourTemplateNet, distractor_video

from medvos.inference.defaults import make_propagator
from medvos.inference.spill import SpillStack, nbytes


def test_nbytes_counts_arrays_in_nested_records():
    a, b = np.zeros((4, 4), np.float32), torch.zeros(3, dtype=torch.float16)
    assert nbytes((1, {"x": a, "y": [b, "text"]})) == 64 + 6


@pytest.mark.parametrize("budget_mb", [0.0, 0.0002, 10.0])  # everything spilled, some, none
def test_spill_stack_pops_newest_first_and_returns_records_exactly(budget_mb):
    rng = np.random.default_rng(0)
    records = [(t, {"p": rng.random((8, 8), dtype=np.float32)}, rng.integers(0, 255, (8, 8), dtype=np.uint8))
               for t in range(12)]
    stack = SpillStack(budget_mb)
    for r in records[:8]:
        stack.push(r)
    top = stack.pop()  # interleaved: a pop between pushes keeps the order
    for r in records[8:]:
        stack.push(r)
    assert len(stack) == 11 and top[0] == 7
    popped = list(stack.drain())
    assert [p[0] for p in popped] == [11, 10, 9, 8, 6, 5, 4, 3, 2, 1, 0]
    for p in popped:
        np.testing.assert_array_equal(p[1]["p"], records[p[0]][1]["p"])
        np.testing.assert_array_equal(p[2], records[p[0]][2])
    assert (stack.spilled == 0) == (budget_mb == 10.0) and len(stack) == 0
    if budget_mb == 0.0:
        assert stack.spilled == 12  # each record went to the file as it came
    with pytest.raises(IndexError):
        stack.pop()
    with pytest.raises(ValueError, match=">= 0 MB"):
        SpillStack(-1)


def test_backward_pass_through_a_temporary_file_gives_the_same_masks():
    """Annotations on frames 3 and 20: frames 0-2 and 4-19 wait for a backward pass; with ``spill_mb`` 0 every one
    of them (and every result) waits in the file, and the output is identical to the pixel and probability."""
    frames, labels = distractor_video(appear=10**6)
    net = ColourTemplateNet().eval()
    outputs = {}
    for spill_mb in (64.0, 0.0):
        prop = make_propagator(net, 64, 4, memory_tree=False, motion=True, spill_mb=spill_mb)
        outputs[spill_mb] = prop.propagate(frames, torch.from_numpy(labels), [3, 20]), prop.spilled
    (kept, none_spilled), (spilled, count) = outputs[64.0], outputs[0.0]
    assert none_spilled == 0 and count == 2 * (3 + 16)  # each waiting frame once, then its result once
    for a, b in zip(kept, spilled):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scale,budget_mb", [(1.0, 64.0), (0.37, 64.0), (1.0, 0.003)])
def test_frames_shown_late_are_the_prepared_frames(tiny_net, echo_small, scale, budget_mb, monkeypatch):
    """With two annotations the frames between them come out after the backward pass; the frames kept for the
    overlay (``keep_frames``) are still exactly the prepared frames: 8-bit values (kept as uint8), fractional ones
    (kept as read), and beyond the budget (a few frames kept, the others read again)."""
    from medvos.inference import predictor as predictor_module
    from medvos.inference.predictor import VideoPredictor
    from medvos.io.cine import Cine

    monkeypatch.setattr(predictor_module, "SHOWN_MB", budget_mb)
    cine = Cine(np.concatenate([echo_small.frames] * 2).astype(np.float32) * scale, source="t", format="frames")
    pred = VideoPredictor.with_defaults(tiny_net, 32, 4, runtime="torch", tune_steps=0, self_annotate=0)
    state = pred.init_state(cine)
    pred.add_annotation(state, 0, echo_small.labels[0])
    pred.add_annotation(state, 11, echo_small.labels[5])
    for win in pred.propagate(state, keep_frames=True):
        n = len(win.labels)
        np.testing.assert_array_equal(win.frames, pred.prepare(state, cine.frames[win.start : win.start + n]))


@pytest.mark.parametrize("spill_mb", [64.0, 0.0])
def test_a_cine_ending_before_its_last_annotation_keeps_the_forward_results_in_frame_order(spill_mb):
    """Annotations on frames 3 and 20 of a cine whose frames stop after 11: frames 4-11 never meet a backward pass;
    they come out in frame order (their results wait in a spill stack too, not in a list: bounded on a cine of any
    length) as the forward pass left them, the same as with frame 3 alone annotated."""
    frames, labels = distractor_video(appear=10**6)
    net = ColourTemplateNet().eval()
    lab = torch.from_numpy(labels)

    def run(anchors):
        prop = make_propagator(net, 64, 4, memory_tree=False, motion=True, spill_mb=spill_mb)
        supports = prop.supports({a: (frames[a], lab[a]) for a in anchors})
        wins = list(prop.stream(prop.windows(frames[:12]), supports))
        return wins, prop.spilled

    cut, spilled = run([3, 20])
    alone, _ = run([3])
    assert [w.start for w in cut] == [w.start for w in alone]
    # with nothing in memory: frames 0-2 and 4-11 each waited once, and their results once (4-11 not all at once)
    assert spilled == (2 * (3 + 8) if spill_mb == 0.0 else 0)
    for a, b in zip(cut, alone):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.drift, b.drift)
