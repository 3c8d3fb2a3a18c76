"""Test-time tuning: the phase-1 model fine-tuned on the cine's annotated frame(s) before it propagates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SIZE = 48


@pytest.fixture(scope="module")
def annotated(endo_nifti):
    """The cine's first frame at the network size and its label, as the predictor prepares them."""
    from medvos.inference.predictor import VideoPredictor

    folder = endo_nifti[0]
    reader = VideoPredictor(lambda: None)
    state = reader.init_state(str(folder / "cine.nii.gz"))
    reader.add_annotations(state, str(folder / "mask.nii.gz"), [0])
    return reader.annotated_at_size(state, SIZE)


def _net():
    from medvos.networks.image_model import FewShotSegNet

    torch.manual_seed(0)
    return FewShotSegNet.from_sizes(backbone_weights=None, channels=16).eval()


def _loss_on(net, images, labels) -> float:
    """Phase 1's loss (Dice + cross-entropy) of the network on the annotated frame, itself as support."""
    from monai.losses import DiceCELoss

    from medvos.networks.image_model import pack_episode

    mask = (labels[:1] > 0).float()[:, None]
    with torch.no_grad():
        logits = net(pack_episode(images[:1], images[:1, None], mask[:, None]))
    return float(DiceCELoss(to_onehot_y=True, softmax=True)(logits, mask))


def test_tuning_learns_the_annotation_on_a_copy(annotated):
    from medvos.inference.tuning import AnnotationTuning

    images, labels = annotated
    assert images.shape == (1, 3, SIZE, SIZE) and labels.shape == (1, SIZE, SIZE) and labels.any()
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tuned = AnnotationTuning(steps=10, learning_rate=3e-3)(net, images, labels)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the input model is untouched
    after = tuned.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)  # batch-norm statistics frozen
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert _loss_on(tuned, images, labels) < 0.8 * _loss_on(net, images, labels)  # it fits the annotation
    frozen = [k for k, p in net.named_parameters() if not p.requires_grad]  # F (the deep stages) stays frozen
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


def test_tuning_is_reproducible_and_bounded(annotated):
    from medvos.inference.tuning import AnnotationTuning

    images, labels = annotated
    net = _net()
    a = AnnotationTuning(steps=3)(net, images, labels).state_dict()
    b = AnnotationTuning(steps=3)(net, images, labels).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same cine and annotation: the same model
    c = AnnotationTuning(steps=3, seed=1)(net, images, labels).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert not AnnotationTuning(steps=0).on and not AnnotationTuning(steps=5, seconds=0).on
    with pytest.raises(ValueError, match="annotated object"):
        AnnotationTuning(steps=1)(net, images, torch.zeros_like(labels))


def test_the_predictor_tunes_once_per_annotation(endo_nifti):
    """`inferring`'s predictor tunes on each video's annotations (again only when they change) and propagates with
    the tuned network; with ``tune_steps=0`` it propagates with the network itself."""
    from medvos.inference.predictor import VideoPredictor

    folder, _, labels = endo_nifti
    net = _net()
    calls = []

    def count(kind):
        def run(predictor, state):
            calls.append(kind)
            return tuned_make(predictor, state)
        return run

    pred = VideoPredictor.with_defaults(net, SIZE, 4, runtime="torch", tune_steps=2, self_annotate=0)  # one pass
    tuned_make, pred.tune = pred.tune, count("tune")
    state = pred.init_state(str(folder / "cine.nii.gz"))
    pred.add_annotation(state, 0, labels[0])
    first = np.concatenate([w.labels for w in pred.propagate(state)])
    again = np.concatenate([w.labels for w in pred.propagate(state)])
    assert calls == ["tune"] and np.array_equal(first, again)
    pred.add_annotation(state, 6, labels[6])
    list(pred.propagate(state))
    assert calls == ["tune", "tune"]
    plain = VideoPredictor.with_defaults(net, SIZE, 4, runtime="torch", tune_steps=0)
    assert plain.tune is None
    # inference.yaml hands the tune_* options gathered in one dict; a keyword beside it wins
    assert VideoPredictor.with_defaults(net, SIZE, 4, runtime="torch", tuning={"tune_steps": 0}).tune is None
    assert VideoPredictor.with_defaults(net, SIZE, 4, runtime="torch", tuning={"tune_steps": 0},
                                        tune_steps=2).tune is not None
    s2 = plain.init_state(str(folder / "cine.nii.gz"))
    plain.add_annotation(s2, 0, labels[0])
    untuned = np.concatenate([w.labels for w in plain.propagate(s2)])
    assert not np.array_equal(first, untuned)  # the tuned network segments differently


def test_a_frozen_backbone_is_left_as_it_was(annotated):
    """``backbone_lr_mult=0`` (``tune_backbone_lr_mult``): the tuning learns the annotation in the rest of the
    network and leaves the backbone bit for bit, so the tuned copy can share the input network's exported query
    graph (:class:`medvos.networks.exported.SharedQueryNetwork`)."""
    from medvos.inference.tuning import AnnotationTuning

    images, labels = annotated
    net = _net()
    tuned = AnnotationTuning(steps=10, learning_rate=3e-3, backbone_lr_mult=0)(net, images, labels)
    before, after = net.state_dict(), tuned.state_dict()
    backbone = [k for k in before if k.startswith("backbone.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in backbone)
    assert _loss_on(tuned, images, labels) < 0.8 * _loss_on(net, images, labels)
    trained = AnnotationTuning(steps=10, learning_rate=3e-3, backbone_lr_mult=0.1, views=0)(net, images,
                                                                                            labels).state_dict()
    assert any(not torch.equal(before[k], trained[k]) for k in backbone)  # a multiplier above 0 tunes G


def test_the_predictor_runs_a_frozen_backbone_tuning_on_the_exported_query_graph(endo_nifti):
    """With the backbone frozen, the predictor's tuned network shares the untuned network's exported query graph
    (no export per video) and gives PyTorch's masks."""
    from medvos.inference.predictor import VideoPredictor
    from medvos.networks.exported import SharedQueryNetwork

    folder, _, labels = endo_nifti
    net = _net()
    masks, networks = {}, {}
    for runtime in ("torch", "onnxruntime"):
        pred = VideoPredictor.with_defaults(net, 64, 4, runtime=runtime, tune_steps=2, tune_backbone_lr_mult=0)
        state = pred.init_state(str(folder / "cine.nii.gz"))
        pred.add_annotation(state, 0, labels[0])
        masks[runtime] = np.concatenate([w.labels for w in pred.propagate(state)])
        networks[runtime] = state.strategy.base.network  # motion on (the default): the appearance propagator's
    assert isinstance(networks["onnxruntime"], SharedQueryNetwork)
    assert not isinstance(networks["torch"], SharedQueryNetwork)
    assert masks["torch"][1:].any()
    agree = np.mean(masks["torch"] == masks["onnxruntime"])
    assert agree > 0.995, agree


def test_the_scale_range_widens_the_sizes_the_tuning_sees():
    """``tune_scale_range`` replaces phase 1's random scaling in the tuning's views: wider, the object's area
    spreads more; ``None`` is phase 1's own augmentation; the option reaches the tuning from the defaults."""
    from medvos.inference.defaults import tuning_options
    from medvos.inference.tuning import AnnotationTuning, _phase1_parts

    yy, xx = np.mgrid[:64, :64]
    disk = torch.from_numpy(((yy - 32) ** 2 + (xx - 32) ** 2 < 12 ** 2).astype(np.float32))[None]
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))

    def areas(scale):
        augment = _phase1_parts(64, scale)[0]
        augment.set_random_state(0)
        return np.array([float(augment({"image": image, "label": disk})["label"].sum()) for _ in range(40)])

    assert areas(0.6).std() > 1.5 * areas(0.2).std()
    assert np.array_equal(areas(None), areas(0.2))  # phase 1's range is 0.2
    with pytest.raises(ValueError, match="tune_scale_range 1.2"):
        _phase1_parts(64, 1.2)  # a scale factor of -0.2 would flip the view
    with pytest.raises(ValueError, match="tune_scale_range -0.1"):
        AnnotationTuning(scale_range=-0.1)  # refused where the tuning is set up, before any cine is read
    assert tuning_options({"tune_scale_range": 0.5})[0]["scale_range"] == 0.5
    assert tuning_options({})[0]["scale_range"] == 0.5  # inference.yaml's default (model card)
    assert tuning_options({"tune_scale_range": None})[0]["scale_range"] is None
    assert tuning_options({"tune_seconds": "2.5"})[0]["seconds"] == 2.5


def test_a_bank_of_views_gives_the_full_networks_logits():
    """A bank view's cached encodings (frozen backbone) give the logits the whole network gives on the same query
    and masked support, so tuning on the bank learns what tuning on fresh views learns, with the backbone run once
    per view instead of per step."""
    from medvos.inference.tuning import _ViewBank
    from medvos.networks.image_model import pack_episode

    net = _net()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, SIZE, SIZE, generator=gen)
    masks = torch.zeros(3, 1, SIZE, SIZE)
    masks[0, :, 8:30, 10:28] = 1
    masks[2, :, 20:40, 5:25] = 1  # view 1 shows no object: a query only
    drawn = iter(zip(images, masks))
    bank = _ViewBank.encode(net, [(0, 1)], lambda i, value, need: next(drawn), 3, torch.device("cpu"))
    assert bank.values == [1, 1, 1] and bank.has_object == [True, False, True]
    rng = np.random.default_rng(3)
    with torch.no_grad():
        logits, targets = bank.episodes(net, 6, rng, SIZE)
    rng = np.random.default_rng(3)  # the same draw, by hand: supports are views that show the object, not the query
    pairs = []
    for _ in range(6):
        q = int(rng.integers(3))
        others = [j for j in (0, 2) if j != q]
        pairs.append((q, others[int(rng.integers(len(others)))]))
    assert all(s in (0, 2) and s != q for q, s in pairs)
    qs, ss = [q for q, _ in pairs], [s for _, s in pairs]
    with torch.no_grad():
        full = net(pack_episode(images[qs], images[ss][:, None], masks[ss][:, None]))
    assert torch.allclose(logits, full, atol=1e-5) and torch.equal(targets, masks[qs])


def test_tuning_on_a_bank_of_views(annotated):
    """``views=N`` (``tune_views``): the annotation is learnt from N views encoded once; reproducible, the input
    network and the backbone untouched; refused without a frozen backbone or with a single view."""
    from medvos.inference.defaults import tuning_options
    from medvos.inference.tuning import AnnotationTuning

    images, labels = annotated
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tuned = AnnotationTuning(steps=10, learning_rate=3e-3, views=8)(net, images, labels)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    after = tuned.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert _loss_on(tuned, images, labels) < 0.8 * _loss_on(net, images, labels)
    again = AnnotationTuning(steps=10, learning_rate=3e-3, views=8)(net, images, labels).state_dict()
    assert all(torch.equal(after[k], again[k]) for k in after)
    fresh = AnnotationTuning(steps=10, learning_rate=3e-3, views=0)(net, images, labels).state_dict()
    assert any(not torch.equal(after[k], fresh[k]) for k in after if after[k].is_floating_point())
    with pytest.raises(ValueError, match="tune_views 4 needs the backbone frozen"):
        AnnotationTuning(views=4, backbone_lr_mult=0.1)
    with pytest.raises(ValueError, match="tune_views 1"):
        AnnotationTuning(views=1)
    assert tuning_options({"tune_views": 16})[0]["views"] == 16 and tuning_options({})[0]["views"] == 64
    assert tuning_options({"tune_seed": 3})[0]["seed"] == 3 and tuning_options({})[0]["seed"] == 0
    # a bare AnnotationTuning is inference.yaml's tuning (its defaults are written in both places, like CueFusion's)
    assert AnnotationTuning() == AnnotationTuning(**tuning_options({})[0])


@pytest.mark.parametrize("views", [8, 0], ids=["bank of views", "fresh views"])
def test_tuning_in_bf16_learns_the_annotation_with_float32_weights(annotated, views):
    """``precision="bfloat16"`` (``tune_precision``): the forward passes autocast to bf16, the weights and their
    update stay float32; it fits the annotation as float32 does, with a different (rounded) result, reproducibly."""
    from medvos.inference.defaults import tuning_options
    from medvos.inference.tuning import AnnotationTuning

    images, labels = annotated
    net = _net()
    tuning = AnnotationTuning(steps=10, learning_rate=3e-3, views=views, precision="bfloat16")
    tuned = tuning(net, images, labels)
    after = tuned.state_dict()
    assert all(v.dtype == net.state_dict()[k].dtype for k, v in after.items())  # float32 stays float32
    assert _loss_on(tuned, images, labels) < 0.8 * _loss_on(net, images, labels)
    assert all(torch.equal(after[k], v) for k, v in tuning(net, images, labels).state_dict().items())
    fp32 = AnnotationTuning(steps=10, learning_rate=3e-3, views=views, precision="float32")(net, images, labels)
    fp32 = fp32.state_dict()
    assert any(not torch.equal(after[k], fp32[k]) for k in after if after[k].is_floating_point())
    with pytest.raises(ValueError, match="tune_precision 'float16'"):
        AnnotationTuning(precision="float16")
    assert tuning_options({"tune_precision": "bfloat16"})[0]["precision"] == "bfloat16"
    assert tuning_options({})[0]["precision"] == "auto"  # inference.yaml's default (model card)


def test_auto_precision_is_bf16_only_where_it_is_native(annotated):
    """``tune_precision auto``: bf16 where the processor computes it natively, float32 elsewhere (emulated bf16 is
    slower than float32), the same models as asking for each."""
    from unittest import mock

    from medvos.inference.tuning import AnnotationTuning
    from medvos.networks import precision as module

    images, labels = annotated
    net = _net()

    def tuned(precision):
        return AnnotationTuning(steps=3, views=4, precision=precision)(net, images, labels).state_dict()

    for native, same in ((True, "bfloat16"), (False, "float32")):
        with mock.patch.object(module, "native_bf16", return_value=native):
            auto = tuned("auto")
        expected = tuned(same)
        assert all(torch.equal(auto[k], expected[k]) for k in auto), (native, same)
    assert module.native_bf16("meta") is False


def test_averaged_tunings_hold_the_mean_weights_of_consecutive_seeds(annotated):
    """``average=k`` (``tune_average``): the weights are the mean of k tunings with seeds seed..seed+k-1; the frozen
    backbone and batch-norm statistics stay the input network's bit for bit; a bad value is refused."""
    from medvos.inference.defaults import tuning_options
    from medvos.inference.tuning import AnnotationTuning

    images, labels = annotated
    net = _net()
    base = dict(steps=10, learning_rate=3e-3, views=8, precision="float32")
    singles = [AnnotationTuning(seed=s, **base)(net, images, labels).state_dict() for s in (3, 4)]
    soup = AnnotationTuning(seed=3, average=2, **base)(net, images, labels).state_dict()
    start = net.state_dict()
    learned = [k for k in soup if not torch.equal(singles[0][k], singles[1][k])]
    assert learned  # the two seeds learned differently, and the soup is their mean
    assert all(torch.allclose(soup[k], (singles[0][k] + singles[1][k]) / 2, atol=1e-6) for k in learned)
    backbone = [k for k in soup if k.startswith("backbone.")]  # frozen (tune_backbone_lr_mult 0)
    assert backbone and all(torch.equal(soup[k], start[k]) for k in backbone)
    stats = [k for k in soup if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(soup[k], start[k]) for k in stats)
    soup_net = AnnotationTuning(seed=3, average=2, **base)(net, images, labels)
    assert _loss_on(soup_net, images, labels) < 0.8 * _loss_on(net, images, labels)  # it fits the annotation
    with pytest.raises(ValueError, match="tune_average 0"):
        AnnotationTuning(average=0)
    assert tuning_options({"tune_average": 3})[0]["average"] == 3
    assert tuning_options({})[0]["average"] == 1  # inference.yaml's default
