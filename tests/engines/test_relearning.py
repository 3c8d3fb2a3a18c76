"""Phase 2: TAU shapes and identity at init, each loss on hand-made tensors, frozen head, flow warping."""

from __future__ import annotations

import pytest
import torch

from medvos.losses.flow import warp
from medvos.losses.relearning import (
    RelearnLoss,
    differential_divergence_loss,
    feature_loss,
    prediction_loss,
    tcr_loss,
    temporal_consistency_loss,
    tps_pseudo_labels,
)
from medvos.networks.image_model import FewShotSegNet
from medvos.networks.relearn_model import RelearnNet
from medvos.networks.tau import TAUTranslator, TemporalAttention


def test_tau_shapes_and_identity_at_init():
    tau = TAUTranslator(frames=4, channels=8, hidden=16, blocks=2).eval()
    x = torch.randn(8, 8, 5, 6)  # two clips of 4 frames
    y = tau(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x)  # zero-initialised output projection: exact identity
    with pytest.raises(ValueError, match="TAU expects"):
        tau(torch.randn(3, 8, 5, 6))
    assert TemporalAttention(16)(torch.randn(2, 16, 7, 7)).shape == (2, 16, 7, 7)


def test_temporal_consistency_loss():
    f = torch.randn(1, 4, 3, 3).repeat(5, 1, 1, 1)
    assert float(temporal_consistency_loss(f)) == pytest.approx(0.0, abs=1e-6)  # identical frames
    g = torch.stack([torch.ones(2, 2, 2), -torch.ones(2, 2, 2)])
    assert float(temporal_consistency_loss(g)) == pytest.approx(2.0)  # opposite frames: cos = -1


def test_feature_and_prediction_losses():
    z_t = torch.zeros(2, 4, 3, 3)
    z_s = torch.ones(2, 4, 3, 3)
    # sum over positions and channels of 1 = 2*4*9 = 72, divided by |B| * D = 2 * 4
    assert float(feature_loss(z_s, z_t)) == pytest.approx(9.0)
    y_t = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1).expand(3, 2, 4, 4)
    y_s = torch.tensor([0.6, 0.4]).view(1, 2, 1, 1).expand(3, 2, 4, 4)
    assert float(prediction_loss(y_s, y_t)) == pytest.approx(0.16)
    assert float(prediction_loss(y_t, y_t)) == 0.0


def test_divergence_loss_zero_when_differences_match():
    a = torch.randn(4, 3, 5, 5)
    assert float(differential_divergence_loss(a, a + 1.0)) == pytest.approx(0.0, abs=1e-6)  # same differences
    assert float(differential_divergence_loss(a, torch.randn(4, 3, 5, 5))) > 0


def test_warp_identity_and_shift():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    w, valid = warp(x, torch.zeros(1, 2, 4, 4))
    torch.testing.assert_close(w, x)
    assert valid.all()
    shift = torch.zeros(1, 2, 4, 4)
    shift[:, 0] = 1.0  # sample one pixel to the right
    w, valid = warp(x, shift)
    torch.testing.assert_close(w[0, 0, :, :3], x[0, 0, :, 1:])
    assert not valid[0, 0, :, 3].any()


def test_tcr_and_tps():
    p = torch.zeros(2, 2, 4, 4)
    p[:, 0] = 0.1
    p[:, 1] = 0.9
    flows = torch.zeros(1, 2, 4, 4)
    assert float(tcr_loss(p, flows)) == pytest.approx(0.0)  # consistent frames
    q = p.clone()
    q[1] = torch.tensor([0.5, 0.5]).view(2, 1, 1)  # current frame less certain than the previous one
    assert float(tcr_loss(q, flows)) == pytest.approx(0.4)
    labels = tps_pseudo_labels(p[:1], flows)
    assert labels.shape == (1, 4, 4) and labels.eq(1).all()


def test_relearn_loss_weights():
    f = torch.randn(3, 4, 2, 2)
    total, parts = RelearnLoss(1.0, 0.0, 0.0)(f, f, torch.rand(3, 2, 8, 8), f, torch.rand(3, 2, 8, 8))
    assert float(total) == pytest.approx(parts["loss_t"])
    _, parts = RelearnLoss(divergence_weight=0.1, tcr_weight=1.0)(
        f, f, torch.rand(3, 2, 8, 8), f, torch.rand(3, 2, 8, 8), torch.zeros(2, 2, 8, 8))
    assert {"loss_t", "loss_f", "loss_p", "loss_div", "loss_tcr"} <= set(parts)


def test_relearn_model_starts_as_image_model_and_head_stays_frozen():
    from monai.engines import SupervisedTrainer

    from medvos.engines.relearning import RelearnStep

    torch.manual_seed(0)
    image = FewShotSegNet.from_sizes(backbone_weights=None, channels=16).eval()
    student = RelearnNet.from_sizes(image, clip_length=4, tau_hidden=16, tau_blocks=1)
    clip, sup = torch.rand(4, 3, 64, 64), torch.rand(1, 1, 3, 64, 64)
    mask = torch.zeros(1, 1, 1, 64, 64)
    mask[..., 20:40, 20:40] = 1
    with torch.no_grad():
        student.eval()
        a = image.segment(clip, image.encode_support(sup, mask), (64, 64))
        b = student.segment(clip, student.encode_support(sup, mask), (64, 64))
    torch.testing.assert_close(a, b)  # TAU is the identity at init
    head_before = {k: v.clone() for k, v in student.head.state_dict().items()}
    neck_before = student.neck.nodes["0_1"].block[0].weight.clone()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[{}], network=student, optimizer=opt,
                                loss_function=RelearnLoss(), iteration_update=RelearnStep(image))
    out = trainer._process_function(trainer, {"clip": clip, "support": sup[0], "support_mask": mask[0]})
    assert {"loss", "loss_t", "loss_f", "loss_p"} <= set(out)
    for k, v in student.head.state_dict().items():
        torch.testing.assert_close(v, head_before[k])  # frozen head: weights and BN statistics unchanged
    assert not torch.equal(neck_before, student.neck.nodes["0_1"].block[0].weight)  # the rest trains
    assert not any(p.requires_grad for p in image.parameters())  # teacher frozen


def test_relearning_step_with_every_option():
    from monai.engines import SupervisedTrainer

    from medvos.engines.relearning import RelearnStep, strong_augment

    torch.manual_seed(1)
    image = FewShotSegNet.from_sizes(backbone_weights=None, channels=16).eval()
    student = RelearnNet.from_sizes(image, clip_length=4, tau_hidden=16, tau_blocks=1)
    loss = RelearnLoss(divergence_weight=0.1, tcr_weight=1.0, tps_weight=0.5)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[{}], network=student, optimizer=opt,
                                loss_function=loss, iteration_update=RelearnStep(image))
    mask = torch.zeros(1, 1, 48, 48)
    mask[..., 10:30, 10:30] = 1
    out = trainer._process_function(trainer, {"clip": torch.rand(4, 3, 48, 48), "support": torch.rand(1, 3, 48, 48),
                                              "support_mask": mask})
    assert {"loss_div", "loss_tcr", "loss_tps"} <= set(out) and all(torch.isfinite(torch.tensor(v)) for v in out.values())
    x = torch.rand(3, 3, 8, 8)
    y = strong_augment(x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1 and not torch.equal(y, x)
    from medvos.engines.relearning import strong_view_transform

    seeded = [strong_augment(x, strong_view_transform().set_random_state(5)) for _ in range(2)]
    assert torch.equal(*seeded)  # MONAI transforms with their own random state: reproducible


def test_frozen_modules_are_a_setting():
    """relearn.yaml's ``frozen_modules`` decides what phase 2 does not train (default: head and deep stage F)."""
    image = FewShotSegNet.from_sizes(backbone_weights=None, channels=16)
    default = RelearnNet.from_sizes(image, clip_length=2, tau_hidden=8, tau_blocks=1)
    assert not any(p.requires_grad for p in default.head.parameters())
    assert not any(p.requires_grad for p in default.backbone.f_stages.parameters())
    assert all(p.requires_grad for p in default.neck.parameters()) and all(p.requires_grad for p in default.tau.parameters())
    head_only = RelearnNet.from_sizes(image, clip_length=2, tau_hidden=8, tau_blocks=1, frozen=["head"])
    assert all(p.requires_grad for p in head_only.backbone.f_stages.parameters())
    with pytest.raises(ValueError, match="'nope' is not a part"):
        RelearnNet.from_sizes(image, clip_length=2, tau_hidden=8, tau_blocks=1, frozen=["nope"])
