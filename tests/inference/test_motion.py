"""Motion-aware propagation (appearance fused with the flow-warped previous result) on tiny synthetic videos.

The appearance cue is a learning-free colour template (see ``test_memory_tree``), so these check the fusion's logic:
a look-alike is dropped when motion is reliable, a jump is followed by re-detection, annotated frames anchor forward
and backward passes that meet, and the drift signal marks where the cues disagree.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from test_memory_tree import ColourTemplateNet, dice, distractor_video

from medvos.flow import DenseFlow, forward_backward_error, warp
from medvos.inference.defaults import make_propagator
from medvos.inference.edges import EdgeRefinement
from medvos.inference.motion import CueFusion, MotionAwarePropagator, Streak, meeting_weight, soft_dice
from medvos.inference.propagator import FewShotPropagator


def disk(cy: float, cx: float, r: float = 6, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)


def test_flow_warps_a_shifted_image_and_round_trip_error_is_small():
    a = np.zeros((64, 64), np.uint8)
    a[20:34, 10:24] = 200
    a = (a + np.random.default_rng(0).integers(0, 30, a.shape)).astype(np.uint8)
    b = np.roll(a, 3, axis=1)
    to_b = DenseFlow()(a, b)
    err_b = forward_backward_error(to_b, DenseFlow("dis", "fast")(b, a))
    moved = warp(a.astype(np.float32), to_b)
    assert np.abs(moved - b)[16:38, 16:30].mean() < np.abs(a.astype(np.float32) - b)[16:38, 16:30].mean() / 3
    assert float(np.median(err_b)) < 1.0
    zero = np.zeros((8, 8, 2), np.float32)
    assert forward_backward_error(zero, zero).max() == 0


def test_reliable_motion_drops_a_far_look_alike_and_keeps_the_boundary():
    prior = disk(20, 20)
    appearance = np.clip(disk(20, 21) * 0.9 + disk(48, 48) * 0.9, 0.02, 0.98)  # the object and a look-alike
    fused, drift, streak = CueFusion()(appearance, prior, np.zeros_like(prior))
    # appearance supports the prior: no contradiction; half its mass is elsewhere
    assert streak == Streak(0, 0) and drift > 0.3
    assert dice(fused > 0.5, disk(20, 20) > 0) > 0.9 and not (fused[40:, 40:] > 0.5).any()


def test_unreliable_flow_hands_the_boundary_to_appearance():
    prior, appearance = disk(20, 20), np.clip(disk(20, 26) * 0.95, 0.03, 0.97)
    steady, _, _ = CueFusion()(appearance, prior, np.zeros_like(prior))
    jumpy, _, _ = CueFusion()(appearance, prior, np.full_like(prior, 30.0))  # round-trip error far above tolerance
    assert dice(steady > 0.5, prior > 0) > dice(steady > 0.5, appearance > 0.5)  # motion decides
    assert dice(jumpy > 0.5, appearance > 0.5) > 0.99  # appearance decides


def test_drifted_prior_is_abandoned_after_a_persistent_confident_detection_elsewhere():
    prior, appearance = disk(20, 20), np.clip(disk(45, 45) * 0.95, 0.02, 0.97)
    rule, still = CueFusion(redetect_frames=3), np.zeros_like(prior)
    held, drift, streak = rule(appearance, prior, still)  # one contradicting frame: the track holds
    assert streak.contradicted == 1 and drift > 0.9 and dice(held > 0.5, prior > 0) > 0.95
    _, _, streak = rule(appearance, prior, still, streak)
    fused, _, streak = rule(appearance, prior, still, streak)  # the third in a row: appearance decides
    assert streak.contradicted == 3 and np.array_equal(fused > 0.5, appearance > 0.5)
    gone, _, _ = rule(appearance, np.zeros_like(prior), still)  # a vanished prior is abandoned at once
    assert np.array_equal(gone, appearance)


def test_an_appearance_drop_out_is_held_by_motion_for_hold_frames_then_let_go():
    """Appearance loses the target everywhere (nothing near the track, nothing confident elsewhere): motion alone
    carries the track for ``hold_frames`` frames; a drop-out that lasts longer is let go, and appearance that finds
    the target again ends it."""
    prior, still = disk(20, 20) * 0.8, np.zeros((64, 64), np.float32)  # a track as sure as a fused result is
    gone = np.full_like(prior, 0.02)
    gone[50:54, 50:54] = 0.55  # a faint blob elsewhere: below redetect_confidence, no re-detection
    rule, streak = CueFusion(hold_below=0.25, hold_frames=2), Streak()
    for held in (1, 2):
        fused, drift, streak = rule(gone, prior, still, streak)
        assert streak == Streak(0, held) and drift > 0.9 and dice(fused > 0.5, prior > 0) > 0.95
    fused, _, streak = rule(gone, prior, still, streak)  # the third frame in a row: appearance decides again
    assert streak.held == 3 and dice(fused > 0.5, prior > 0) < 0.5
    back = np.clip(disk(20, 21) * 0.95, 0.02, 0.97)
    _, _, streak = rule(back, prior, still, streak)
    assert streak.held == 0
    off, _, _ = CueFusion(hold_below=0.0)(gone, prior, still)  # 0: never held
    assert dice(off > 0.5, prior > 0) < 0.5
    confident = np.clip(disk(45, 45) * 0.95, 0.02, 0.97)  # confident elsewhere: re-detection's case, not a drop-out
    _, _, streak = rule(confident, prior, still)
    assert streak.held == 0 and streak.contradicted == 1
    with pytest.raises(ValueError, match="hold_below"):
        CueFusion(hold_below=1.5)


def test_capped_motion_decides_where_appearance_is_unsure_and_yields_where_it_is_sure():
    """A track that has slid 4 px off the object (flow follows the texture, not the outline): an uncapped, sure prior
    and a sure appearance cancel on the strip between them; capped, the sure appearance wins there, while an unsure
    appearance (0.5) still takes the prior's boundary."""
    prior = np.clip(disk(20, 24, 10), 0.001, 0.999)
    appearance = np.clip(disk(20, 20, 10) * 0.98, 0.01, 0.98)
    still, strip = np.zeros_like(prior), (disk(20, 20, 10) > 0) & ~(disk(20, 24, 10) > 0)
    uncapped, _, _ = CueFusion()(appearance, prior, still)
    capped, _, _ = CueFusion(motion_cap=0.9)(appearance, prior, still)
    assert (uncapped > 0.5)[strip].mean() < 0.1 and (capped > 0.5)[strip].all()
    unsure, _, _ = CueFusion(motion_cap=0.9)(np.full_like(prior, 0.5), prior, still)
    assert np.array_equal(unsure > 0.5, prior > 0.5)
    net = ColourTemplateNet().eval()
    assert make_propagator(net, 64, 4, memory_tree=False, motion=True, motion_cap=0.9).rule.motion_cap == 0.9
    with pytest.raises(ValueError, match="motion_cap"):
        CueFusion(motion_cap=0.3)  # below one half it would flip what motion says


def test_soft_dice_measures_agreement_of_two_probability_maps():
    a, b = disk(20, 20), disk(45, 45)
    assert soft_dice(a, a) == pytest.approx(1.0) and soft_dice(a, b) == 0.0
    assert soft_dice(a, 0.5 * a) == pytest.approx(2 / 3)  # 2 * 0.5 / (1 + 0.5) of the same support
    _, drift, _ = CueFusion()(a, b, np.zeros_like(a))
    assert drift == pytest.approx(1.0)  # the drift is its complement


def test_annotation_cue_counts_only_where_reliable_and_in_agreement_with_the_track():
    """The annotation warped straight onto the frame pulls appearance towards it where its flow checks out and it
    agrees with the chained prior; a disagreeing or unreliable one leaves appearance alone."""
    rule, still = CueFusion(), np.zeros((64, 64), np.float32)
    appearance = np.full((64, 64), 0.5, np.float32)  # undecided appearance
    anchor, crept = disk(30, 30, 10), disk(30, 32, 10)  # the chained prior has crept 2 px off the annotation
    pulled = rule.with_anchor(appearance, crept, anchor, still)
    assert dice(pulled > 0.5, anchor > 0) > 0.99 and pulled[30, 30] > 0.99 and pulled[2, 2] < 0.01
    elsewhere = disk(10, 50, 6)  # a view change: the direct flow put the annotation where the track is not
    assert np.array_equal(rule.with_anchor(appearance, elsewhere, anchor, still), appearance)
    unreliable = rule.with_anchor(appearance, crept, anchor, np.full_like(still, 40.0))
    assert np.abs(unreliable - appearance).max() < 0.01
    assert np.array_equal(CueFusion(anchor_weight=0).with_anchor(appearance, crept, anchor, still), appearance)
    fused, _, _ = rule(appearance, crept, still, Streak(), anchor, still)  # through the rule: between the two
    both, either = (anchor > 0) & (crept > 0), (anchor > 0) | (crept > 0)
    assert (fused > 0.5)[both].all() and not (fused > 0.5)[~either].any()


def test_edge_refinement_moves_a_soft_boundary_onto_the_image_edge():
    truth = np.zeros((64, 64), np.float32)
    truth[16:48, 16:48] = 1
    grey = (40 + 160 * truth + np.random.default_rng(0).normal(0, 4, truth.shape)).clip(0, 255).astype(np.uint8)
    soft = cv2.GaussianBlur(np.roll(truth, 2, axis=1), (0, 0), 3)  # coarse and 2 px off, as an upsampled logit map
    refined = EdgeRefinement(radius=4)(grey, soft)
    assert refined.dtype == np.float32 and 0 <= refined.min() and refined.max() <= 1
    assert dice(refined > 0.5, truth > 0) > dice(soft > 0.5, truth > 0) + 0.03
    assert dice(refined > 0.5, truth > 0) > 0.97
    assert np.array_equal(EdgeRefinement(radius=0)(grey, soft), soft)
    assert not EdgeRefinement()(grey, np.zeros_like(soft)).any()


class _Recording(CueFusion):
    """The default rule, recording the annotation cue it was given per call."""

    def __call__(self, appearance, prior, flow_error, streak=Streak(), anchor=None, anchor_error=None):  # noqa: ANN001
        self.calls.append(anchor)
        return super().__call__(appearance, prior, flow_error, streak, anchor, anchor_error)


def test_every_propagated_frame_gets_the_annotation_cue_of_its_pass():
    frames, labels = distractor_video(appear=10**6)
    net = ColourTemplateNet().eval()
    rule = _Recording()
    object.__setattr__(rule, "calls", [])
    prop = MotionAwarePropagator(FewShotPropagator(net, 64, 4), rule)
    out, _, _ = prop.propagate(frames, torch.from_numpy(labels), [3, 20])
    # forward from 3 over 4..19 and from 20 over 21..23, backward from 20 over 19..4 and from 3 over 2..0: one cue
    # per fused frame and pass
    assert len(rule.calls) == 16 + 3 + 16 + 3 and all(a is not None for a in rule.calls)
    assert np.mean([dice(out[t] > 0, labels[t] > 0) for t in range(24)]) > 0.9
    none = _Recording(anchor_weight=0)
    object.__setattr__(none, "calls", [])
    MotionAwarePropagator(FewShotPropagator(net, 64, 4), none).propagate(frames, torch.from_numpy(labels), [3])
    assert none.calls and all(a is None for a in none.calls)  # off: not even computed


def jumping_video(t: int = 16, jump: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    """A bright disk drifting right; at ``jump`` it is somewhere else (a cut) and drifts on from there."""
    frames = np.full((t, 3, 64, 64), 0.2, np.float32)
    labels = np.zeros((t, 64, 64), np.uint8)
    for k in range(t):
        m = disk(18, 12 + k) if k < jump else disk(46, 30 + k)
        frames[k, :, m > 0] = 0.8
        labels[k] = m
    return torch.from_numpy(frames), labels


def test_motion_settings_follow_the_appearance_network_tuned_or_not():
    """A bare ``CueFusion()`` (the rule of a bare :class:`MotionAwarePropagator`) is `inferring`'s default with a
    tuned appearance network, and so is a bare propagator's meeting weight; untuned, ``inference.yaml``'s
    ``untuned`` values apply; a plain value serves both."""
    net = ColourTemplateNet().eval()
    tuned = make_propagator(net, 64, 4, tuned=True, memory_tree=False, motion=True).rule
    untuned = make_propagator(net, 64, 4, memory_tree=False, motion=True).rule
    assert tuned == CueFusion()
    assert (untuned.motion_weight, untuned.redetect_support, untuned.redetect_frames) == (2.5, 0.15, 3)
    assert (tuned.anchor_weight, untuned.anchor_weight, untuned.anchor_agreement) == (1.0, 2.0, 0.6)
    assert make_propagator(net, 64, 4, memory_tree=False, motion=True, motion_weight=1.5).rule.motion_weight == 1.5
    # the meeting weight of a bare MotionAwarePropagator is inference.yaml's (written in both places, like CueFusion's)
    bare = MotionAwarePropagator(FewShotPropagator(net, 64, 4))
    default = make_propagator(net, 64, 4, memory_tree=False, motion=True)
    assert (default.meeting_agreement, default.check.preset) == (bare.meeting_agreement, bare.check.preset)
    with pytest.raises(ValueError, match="motion_weight"):
        make_propagator(net, 64, 4, motion=True, motion_weight={"tuned": 2.0})


def test_a_prepared_network_is_used_as_it_is_whatever_the_runtime(monkeypatch):
    """The predictor's tuned copy already runs where ``for_tuned`` chose: ``prepared`` keeps it out of any export."""
    import medvos.networks.exported as exported

    def no_export(*args, **kwargs):
        raise AssertionError("a prepared network was handed to for_runtime")

    monkeypatch.setattr(exported, "for_runtime", no_export)
    net = ColourTemplateNet().eval()
    prop = make_propagator(net, 64, 4, tuned=True, prepared=True, runtime="openvino", memory_tree=False, motion=True)
    assert prop.base.network is net
    with pytest.raises(AssertionError, match="prepared"):
        make_propagator(net, 64, 4, runtime="openvino", memory_tree=False, motion=True)


def test_motion_aware_propagation_follows_a_cut_and_streams_every_frame_once():
    frames, labels = jumping_video()
    net = ColourTemplateNet().eval()
    # the hold-then-re-detect logic alone: no edge refinement (on a flat background it would blur the held track);
    # waiting 3 frames goes with the untuned network's motion weight (inference.yaml)
    prop = MotionAwarePropagator(FewShotPropagator(net, 64, 4), CueFusion(motion_weight=2.5, redetect_frames=3),
                                 EdgeRefinement(0))
    sup = prop.supports({0: (frames[0], torch.from_numpy(labels[0]))})
    seen, drift = [], np.zeros(16)
    out = np.zeros_like(labels)
    for win in prop.stream(prop.windows(frames), sup):
        n = len(win.labels)
        seen += list(range(win.start, win.start + n))
        out[win.start : win.start + n], drift[win.start : win.start + n] = win.labels, win.drift
    assert seen == list(range(16))
    # the track holds for redetect_frames - 1 = 2 frames after the cut, then appearance re-detects the object
    assert min(dice(out[t] > 0, labels[t] > 0) for t in [*range(1, 8), *range(10, 16)]) > 0.85
    assert dice(out[8] > 0, labels[7] > 0) > 0.8 and dice(out[10] > 0, labels[10] > 0) > 0.85
    assert min(drift[8:10]) > 0.9 and max(drift[1:8]) < 0.5 and max(drift[11:]) < 0.5  # drift marks the cut


def test_annotation_in_the_middle_and_two_annotations_meet_in_both_directions():
    frames, labels = distractor_video(appear=10**6)
    net = ColourTemplateNet().eval()
    one = make_propagator(net, 64, 4, memory_tree=False, motion=True)
    out, _, conf = one.propagate(frames, torch.from_numpy(labels), [12])  # backward to 0, forward to 23
    assert np.array_equal(out[12], labels[12]) and conf[12] == 1
    assert np.mean([dice(out[t] > 0, labels[t] > 0) for t in range(24)]) > 0.9
    two = make_propagator(net, 64, 4, memory_tree=True, motion=True)
    out2, _, conf2 = two.propagate(frames, torch.from_numpy(labels), [3, 20])
    assert np.array_equal(out2[3], labels[3]) and np.array_equal(out2[20], labels[20])
    assert np.mean([dice(out2[t] > 0, labels[t] > 0) for t in range(24)]) > 0.9


def test_meeting_weights_each_pass_by_nearness_and_agreement_with_appearance():
    assert meeting_weight(0.75, 0.9, 0.0) == 0.75  # agreement 0: nearness alone, whatever the drifts
    assert meeting_weight(0.75, 0.2, 0.2, 2.0) == pytest.approx(0.75)  # equal agreement: nearness decides
    # forward: 0.25 * 0.8^2 = 0.16; backward: 0.75 * 0.2^2 = 0.03
    assert meeting_weight(0.25, 0.2, 0.8, 2.0) == pytest.approx(0.16 / 0.19)
    assert meeting_weight(1.0, 1.0, 0.0, 1.0) == 1.0 and meeting_weight(0.0, 0.0, 1.0, 1.0) == 0.0  # at the annotations


def test_a_pass_from_a_misleading_annotation_yields_where_they_meet():
    """Frame 12 annotated with half the disk (the target partly hidden there): its backward pass keeps the half disk
    where motion is reliable and disagrees with appearance; weighted by agreement (the default), the forward pass from
    frame 0 decides those frames."""
    frames, labels = distractor_video(appear=10**6)
    given = labels.copy()
    given[12, :, : 14 + 12] = 0  # the disk's left half hidden
    net = ColourTemplateNet().eval()
    scores = {}
    for agreement in (0.0, None):  # nearness alone; inference.yaml's default
        given_opts = {} if agreement is None else {"meeting_agreement": agreement}
        prop = make_propagator(net, 64, 4, memory_tree=False, motion=True, edge_radius=0, motion_weight=2.5,
                               **given_opts)
        out, _, _ = prop.propagate(frames, torch.from_numpy(given), [0, 12])
        scores[agreement] = np.mean([dice(out[t] > 0, labels[t] > 0) for t in range(6, 12)])
    assert scores[0.0] < 0.85 and scores[None] > scores[0.0] + 0.03, scores  # 0.72 and 0.76


def two_disks_video(t: int = 16, size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """A grey disk drifting right (label 1) and a magenta one drifting left (label 2) on a dark noisy background."""
    rng = np.random.default_rng(0)
    frames = np.repeat(0.2 + 0.03 * rng.standard_normal((t, 1, size, size)), 3, axis=1).astype(np.float32)
    labels = np.zeros((t, size, size), np.uint8)
    for k in range(t):
        for value, (cy, cx), colour in ((1, (18, 12 + k), (0.8, 0.8, 0.8)), (2, (46, 50 - k), (0.8, 0.2, 0.8))):
            m = disk(cy, cx) > 0
            frames[k, :, m] = colour
            labels[k][m] = value
    return torch.from_numpy(frames), labels


def test_passes_meet_per_object():
    """Object 1 annotated half hidden on frame 0, object 2 half hidden on frame 12: between them object 1 should trust
    its backward pass and object 2 its forward pass. Each object's meeting weight comes from its own drifts, so with
    both in the cine each is segmented exactly as when it is the only object (with the largest drift over objects,
    one object's misleading annotation moved the other's weights)."""
    frames, labels = two_disks_video()
    given = labels.copy()
    given[0, :, :12] = 0  # object 1's left half hidden on frame 0
    given[12, :, 50 - 12:] = 0  # object 2's right half hidden on frame 12
    net = ColourTemplateNet().eval()

    def run(keep: set[int]) -> np.ndarray:
        prop = make_propagator(net, 64, 4, memory_tree=False, motion=True, edge_radius=0, motion_weight=2.5)
        only = np.where(np.isin(given, list(keep)), given, 0).astype(np.uint8)
        return prop.propagate(frames, torch.from_numpy(only), [0, 12])[0]

    both = run({1, 2})
    for value in (1, 2):
        alone = run({value})
        assert np.array_equal(both[1:12] == value, alone[1:12] == value), value


def test_next_frame_goes_to_where_drift_starts():
    from medvos.monai_label.strategy import next_frame

    conf = [1.0, 0.9, 0.8, 0.95, 0.9, 0.7, 0.9, 0.9]
    drift = [0.0, 0.1, 0.2, 0.9, 0.9, 1.0, 0.9, 0.3]
    frame, urgency, reason = next_frame(conf, drift, {0}, mode="drift_onset")
    assert frame == 3 and urgency == pytest.approx(1 - 2.8 / 3) and "drift starts" in reason  # not the worst (5)
    flicker = [0.1, 0.1, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert next_frame(conf, flicker, {0}, mode="drift_onset")[:2] == (5, 0.7)  # one flicker: no drift
    assert next_frame(conf, None, set(range(8))) is None


def test_next_frame_measures_drift_against_the_cines_own_level():
    """An appearance cue that disagrees with motion from the first frame on (an untuned network on an unseen
    anatomy) is not a drift: next to the annotation motion is as right as it will ever be. The least confident frame
    is proposed instead; a rise well above that level still counts."""
    from medvos.monai_label.strategy import drift_level, next_frame

    conf = [1.0, 0.9, 0.8, 0.95, 0.9, 0.6, 0.9, 0.9, 0.9, 0.9]
    flat = [0.0, 0.75, 0.8, 0.85, 0.8, 0.8, 0.75, 0.8, 0.85, 0.8]
    assert drift_level(flat, {0}) == pytest.approx(0.8)
    # a fixed onset: "drift starts" at the first frame
    assert next_frame(conf, flat, {0}, mode="drift_onset", relative=False)[0] == 1
    frame, urgency, reason = next_frame(conf, flat, {0}, mode="drift_onset")
    assert (frame, urgency) == (5, 0.6) and "confidence" in reason
    rising = flat[:6] + [1.0, 1.0, 1.0, 0.95]
    frame, _, reason = next_frame(conf, rising, {0}, mode="drift_onset")
    assert frame == 6 and "drift starts" in reason
    # the level is taken next to every annotation, on both sides
    assert drift_level([0.0, 0.1, 0.9, 0.9, 0.2, 0.0], {0, 5}, near=1) == pytest.approx(0.15)


def test_next_frame_aims_the_correction_where_it_reaches_most_frames():
    """The default: the frame whose annotation stands to correct the most, far from the annotated frames and
    where the cues disagree (measured on the development sets to gain more per correction than the drift onset)."""
    from medvos.monai_label.strategy import correction_gain, frame_error, next_frame

    # distance alone: the middle of the longest stretch without an annotation (frames 10..30 here)
    assert int(correction_gain([1.0] * 31, {0, 10, 30}).argmax()) in (19, 20, 21)
    assert 8 <= int(correction_gain([1.0] * 21, {0}).argmax()) <= 12  # after the only annotation: splits the rest
    # annotating a frame corrects what it comes nearer to, by how much nearer (by hand, annotations 0 and 4, frame 2:
    # itself fully, 1 and 3 not at all, they stay one frame from an annotation; frame 7 of 0..8 brings 6 from 6 to 1)
    assert correction_gain([1.0] * 5, {0, 4})[2] == pytest.approx(1.0)
    by_hand = (6 - 1) / 6 + 1 + (8 - 1) / 8 + (5 - 2) / 5 + (4 - 3) / 4  # frames 6, 7, 8, 5, 4
    assert correction_gain([1.0] * 9, {0})[7] == pytest.approx(by_hand)
    assert correction_gain([1.0] * 5, {0, 4})[[0, 4]].tolist() == [0.0, 0.0]
    # the drift pulls the pick towards the stretch where appearance and motion disagree
    conf = [1.0] + [0.9] * 20
    quiet = [0.0] + [0.1] * 20
    drifting = [0.0] + [0.1] * 12 + [0.9] * 8
    t_quiet, u_quiet, reason = next_frame(conf, quiet, {0})
    t_drift, u_drift, _ = next_frame(conf, drifting, {0})
    assert t_drift > t_quiet and u_drift < u_quiet and "correct the most" in reason  # and it is more urgent
    assert frame_error(conf, None, prior=0.5)[1] == pytest.approx(0.5 + 0.5 * 0.1)  # no drift: 1 - confidence
    with pytest.raises(ValueError, match="mode"):
        next_frame(conf, quiet, {0}, mode="worst")



def test_a_network_failure_mid_cine_reaches_the_caller():
    """The network runs a window ahead in a thread: its error still surfaces from the stream, after the windows
    that were done."""

    class FailsLater(ColourTemplateNet):
        calls = 0

        def segment_encoded(self, q, colour, size):  # noqa: ANN001
            FailsLater.calls += 1
            if FailsLater.calls > 2:
                raise RuntimeError("out of memory in window 3")
            return super().segment_encoded(q, colour, size)

    frames, labels = distractor_video(appear=10**6)
    prop = MotionAwarePropagator(FewShotPropagator(FailsLater().eval(), 64, 4))
    sup = prop.supports({0: (frames[0], torch.from_numpy(labels[0]))})
    seen = []
    with pytest.raises(RuntimeError, match="window 3"):
        for win in prop.stream(prop.windows(frames), sup):
            seen.append(win.start)
    assert seen and max(seen) < 8
