"""Flows computed ahead in a background thread (motion-aware propagation's flows): each one requested is taken, each
one taken was requested (none computed twice, none wasted), and the masks are the same as computing each flow when
it is needed."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from test_memory_tree import ColourTemplateNet, distractor_video

from medvos.inference import motion
from medvos.inference.defaults import make_propagator
from medvos.inference.flows_ahead import FlowsAhead
from medvos.inference.reuse import PassCache


def test_a_requested_flow_is_computed_once_in_the_background_and_taken_once():
    calls, threads = [], set()

    def compute(src, dst):
        calls.append((int(src[0, 0]), int(dst[0, 0])))
        threads.add(threading.current_thread().name)
        return src + dst, src - dst

    frames = [np.full((2, 2), k, np.float32) for k in range(4)]
    ahead = FlowsAhead(compute)
    ahead.request(0, 1, frames[0], frames[1])
    ahead.request(0, 1, frames[0], frames[1])  # asked twice before it is taken: computed once
    flow, error = ahead.take(0, 1, frames[0], frames[1])
    np.testing.assert_array_equal(flow, np.full((2, 2), 1.0))
    np.testing.assert_array_equal(error, np.full((2, 2), -1.0))
    assert ahead.take(2, 3, frames[2], frames[3])[0][0, 0] == 5  # not requested: computed when taken
    assert calls == [(0, 1), (2, 3)] and len(ahead) == 0
    assert threads and all(name.startswith("medvos-flow") for name in threads)
    ahead.request(1, 2, frames[1], frames[2])
    ahead.close()  # what is still queued is dropped; later requests do nothing, a take is refused
    ahead.request(1, 2, frames[1], frames[2])
    assert len(ahead) == 0
    with pytest.raises(RuntimeError, match="after the propagation"):
        ahead.take(1, 2, frames[1], frames[2])


class _Recording(FlowsAhead):
    """Records the flows requested and taken; ``ahead`` False: requests are ignored (each flow computed when it is
    taken, as before flows were computed ahead)."""

    log: dict[str, list[tuple[int, int]]] = {}
    ahead = True

    def request(self, s, d, src, dst):
        self.log.setdefault("requested", []).append((s, d))
        if self.ahead:
            super().request(s, d, src, dst)

    def take(self, s, d, src, dst):
        self.log.setdefault("taken", []).append((s, d))
        return super().take(s, d, src, dst)


def _propagate(monkeypatch, ahead: bool, reuse: PassCache | None = None):
    frames, labels = distractor_video(appear=10**6)
    monkeypatch.setattr(motion, "FlowsAhead", _Recording)
    _Recording.log, _Recording.ahead = {}, ahead
    prop = make_propagator(ColourTemplateNet().eval(), 64, 4, memory_tree=False, motion=True)
    prop.reuse_from(reuse)
    out = prop.propagate(frames, torch.from_numpy(labels), [3, 20])  # forward, backward and meeting passes
    return out, dict(_Recording.log)


def test_every_flow_taken_was_requested_ahead_and_the_masks_are_the_same(monkeypatch):
    (labels, confidence, drift), log = _propagate(monkeypatch, ahead=True)
    # requested exactly what the passes take: the chained flows and the annotation cue's flows, forward and backward
    assert sorted(log["requested"]) == sorted(log["taken"]) and len(set(log["taken"])) == len(log["taken"])
    assert (2, 3) not in log["taken"] and (3, 2) in log["taken"] and (20, 19) in log["taken"]  # backward from 20
    assert (3, 10) in log["taken"] and (20, 10) in log["taken"]  # the annotation cues, from either side
    (labels_now, confidence_now, drift_now), _ = _propagate(monkeypatch, ahead=False)
    np.testing.assert_array_equal(labels, labels_now)
    np.testing.assert_array_equal(confidence, confidence_now)
    np.testing.assert_array_equal(drift, drift_now)


def test_flows_an_earlier_pass_kept_are_not_requested_again(monkeypatch):
    cache = PassCache(256.0)
    first, log = _propagate(monkeypatch, ahead=True, reuse=cache)
    assert len(log["requested"]) == len(log["taken"]) > 0
    cache.storing = False
    second, log = _propagate(monkeypatch, ahead=True, reuse=cache)
    assert "requested" not in log and "taken" not in log  # every flow from the cache
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
