"""The method's modules on tiny tensors, the pretrained backbone (chelsea), weights errors, K-shot shapes."""

from __future__ import annotations

import pytest
import torch

from medvos.networks.backbone import BackboneWeightsError, build_backbone, efficientnet_lite0
from medvos.networks.fusion import CrossResolutionFusion
from medvos.networks.head import SegmentationHead
from medvos.networks.image_model import FewShotSegNet, pack_episode, param_groups, unpack_episode
from medvos.networks.neck import GFPNNeck, _node_sources
from medvos.networks.pseudo_mask import PseudoMask


def test_pseudo_mask_known_values():
    # query positions: (0,0) equals the in-mask support feature, (0,1) is orthogonal to it
    fs = torch.zeros(1, 1, 2, 2, 2)
    fs[0, 0, :, 0, 0] = torch.tensor([1.0, 0.0])  # inside the mask
    fs[0, 0, :, 1, 1] = torch.tensor([0.0, 1.0])  # outside the mask: must be ignored
    mask = torch.zeros(1, 1, 1, 4, 4)
    mask[..., :2, :2] = 1  # covers support cell (0,0) only
    fq = torch.zeros(1, 2, 1, 2)
    fq[0, :, 0, 0] = torch.tensor([2.0, 0.0])
    fq[0, :, 0, 1] = torch.tensor([0.0, 3.0])
    p = PseudoMask()(fq, fs, mask)
    assert p.shape == (1, 1, 1, 2)
    assert p[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-5) and p[0, 0, 0, 1] == pytest.approx(0.0, abs=1e-5)


def test_pseudo_mask_averages_shots_and_empty_support():
    fq, fs = torch.randn(2, 8, 3, 3), torch.randn(2, 3, 8, 3, 3)
    mask = torch.ones(2, 3, 1, 12, 12)
    p = PseudoMask()(fq, fs, mask)
    assert p.shape == (2, 1, 3, 3) and p.min() >= 0 and p.max() <= 1
    assert torch.count_nonzero(PseudoMask()(fq, fs, torch.zeros_like(mask))) == 0


def test_fusion_neck_head_shapes():
    f = CrossResolutionFusion(5, 16)(torch.rand(2, 1, 4, 4), torch.rand(2, 5, 8, 8), torch.rand(2, 5, 8, 8))
    assert f.shape == (2, 16, 8, 8)
    assert GFPNNeck(16, levels=3, depth=3)(f).shape == (2, 16, 8, 8)
    assert GFPNNeck(16)(torch.rand(1, 16, 7, 9)).shape == (1, 16, 7, 9)  # odd sizes
    assert SegmentationHead(16)(f, (32, 32)).shape == (2, 2, 32, 32)


def test_neck_queen_fusion_and_log2n_skips():
    assert _node_sources(1, 1, 3) == [(1, 0), (2, 0), (0, 0)]
    assert (0, 0) in _node_sources(0, 2, 3)  # layer 2 skips back to layer 0 (2^1)
    assert (1, 0) in _node_sources(1, 4, 3) and (1, 2) in _node_sources(1, 4, 3)


@pytest.mark.parametrize("shots", [1, 2])
def test_image_model_k_shot(shots):
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16)
    q, s, m = torch.rand(2, 3, 64, 64), torch.rand(2, shots, 3, 64, 64), (torch.rand(2, shots, 1, 64, 64) > 0.5).float()
    x = pack_episode(q, s, m)
    assert x.shape == (2, 3 + 4 * shots, 64, 64)
    for a, b in zip(unpack_episode(x), (q, s, m)):
        torch.testing.assert_close(a, b)
    y = net(x)
    assert y.shape == (2, 2, 64, 64)
    y.mean().backward()
    assert all(p.grad is None for p in net.backbone.f_stages.parameters())  # F is frozen
    assert net.head.conv1.weight.grad is not None and net.fusion.conv[0].weight.grad is not None
    groups = param_groups(net, 1e-3, 0.1)
    assert groups[1]["lr"] == pytest.approx(1e-4)


def test_lite0_pretrained_classifies_chelsea_as_cat():
    import skimage.data
    import torch.nn.functional as F

    net = efficientnet_lite0().eval()
    x = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, (224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        logits = net((x - 127.5) / 128)
    assert int(logits.argmax()) == 285  # ImageNet 285: Egyptian cat


def test_backbone_strides():
    bb = build_backbone()
    mid, deep = bb(torch.rand(1, 3, 96, 128))
    assert mid.shape == (1, 40, 12, 16) and deep.shape == (1, 112, 6, 8)


def test_missing_weights_file_fails_clearly(tmp_path):
    with pytest.raises(BackboneWeightsError, match="nope.pt: EfficientNet-Lite0 weights file not found"):
        build_backbone("efficientnet-lite0", tmp_path / "nope.pt")
    with pytest.raises(BackboneWeightsError, match="resnet.pt: ResNet-50 weights file not found"):
        build_backbone("resnet50", tmp_path / "resnet.pt")
    with pytest.raises(BackboneWeightsError, match="no packaged weights"):
        build_backbone("resnet50", "package")


def test_resnet50_with_user_weights(tmp_path):
    from torchvision.models import resnet50

    torch.save(resnet50(weights=None).state_dict(), tmp_path / "r50.pt")
    mid, deep = build_backbone("resnet50", tmp_path / "r50.pt")(torch.rand(1, 3, 64, 64))
    assert mid.shape == (1, 512, 8, 8) and deep.shape == (1, 1024, 4, 4)


def test_tau_attention_uses_monai_blocks_and_old_relearned_files_load(tmp_path):
    """TAU's squeeze-excitation is MONAI's ChannelSELayer and its stochastic depth MONAI's DropPath (issue 17): the
    same function as the hand-written blocks of earlier versions, whose relearned files still load."""
    from monai.networks.blocks import ChannelSELayer
    from monai.networks.layers import DropPath

    from medvos.networks.checkpoint import load_model
    from medvos.networks.relearn_model import RelearnNet
    from medvos.networks.tau import TAUBlock, TemporalAttention

    torch.manual_seed(0)
    for dim in (32, 48, 256):
        attn = TemporalAttention(dim).eval()
        assert isinstance(attn.se, ChannelSELayer) and attn.se.fc[0].out_features == max(dim // 16, 4)
        x = torch.randn(2, dim, 6, 6)
        old_se = torch.nn.Sequential(*[attn.se.fc[i] for i in range(4)])  # the old nn.Sequential, same weights
        old = attn.pw(attn.dw_dilated(attn.dw(x))) * old_se(x.mean(dim=(2, 3)))[:, :, None, None] * x
        torch.testing.assert_close(attn(x), old)
    assert isinstance(TAUBlock(32).drop_path, DropPath)
    net = RelearnNet.from_sizes(FewShotSegNet.from_sizes(backbone_weights=None), 4, 32).eval()
    old_keys = {k.replace(".se.fc.", ".se."): v for k, v in net.state_dict().items()}  # an earlier version's file
    assert any(".attn.attn.se.0.weight" in k for k in old_keys)
    torch.save(old_keys, tmp_path / "old_relearned.pt")
    loaded = load_model(tmp_path / "old_relearned.pt", FewShotSegNet.from_sizes(backbone_weights=None), 4, 32)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)


def _parsed(files: list[str], **overrides):
    from monai.bundle import ConfigParser

    from conftest import REPO

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundle" / "configs" / f) for f in files])
    for key, value in {"backbone_weights": None, **overrides}.items():
        parser[key] = value
    return parser


def test_train_yaml_network_def_is_the_tree_every_checkpoint_saves(tmp_path):
    """issue 17 item 1: the network is composed from `_target_` parts in train.yaml, a checkpoint saves that tree,
    and the tree alone rebuilds the same network."""
    from medvos.networks.checkpoint import ModelSpec, build_network, load_model
    from medvos.networks.parts import part_config

    parser = _parsed(["train.yaml"], channels=16)
    raw = parser.get("network_def")
    net = parser.get_parsed_content("network_def")
    tree = part_config(net)
    assert tree["_target_"] == raw["_target_"] == "medvos.networks.image_model.FewShotSegNet"
    assert {k for k in raw if not k.startswith("_")} == {k for k in tree if not k.startswith("_")}
    assert tree["backbone"] == {"_target_": raw["backbone"]["_target_"], "weights": None}  # the file has the weights
    assert tree["fusion"] == {"_target_": raw["fusion"]["_target_"], "mid_channels": 40, "out_channels": 16}
    assert tree["neck"]["levels"] == raw["neck"]["levels"] and tree["head"]["channels"] == 16
    assert part_config(FewShotSegNet.from_sizes(backbone_weights=None, channels=16)) == tree
    rebuilt = build_network(tree)
    assert part_config(rebuilt) == tree
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    ckpt = tmp_path / "model.pt"
    torch.save({"model": net.state_dict(), "spec": ModelSpec(net, 32).state_dict()}, ckpt)
    x = torch.rand(1, 7, 32, 32)
    torch.testing.assert_close(load_model(ckpt).eval()(x), net.eval()(x))


def test_relearn_yaml_puts_its_tau_in_the_saved_tree(tmp_path):
    """relearn.yaml composes the relearning model (teacher + TAU + frozen parts); its checkpoint rebuilds alone."""
    from medvos.networks.checkpoint import ModelSpec, load_model, checkpoint_clip_length
    from medvos.networks.parts import part_config
    from medvos.networks.relearn_model import RelearnNet

    image = FewShotSegNet.from_sizes(backbone_weights=None, channels=16)
    phase1 = tmp_path / "phase1.pt"
    torch.save({"model": image.state_dict(), "spec": ModelSpec(image, 32).state_dict()}, phase1)
    parser = _parsed(["train.yaml", "relearn.yaml"], phase1_checkpoint=str(phase1), clip_length=4, tau_hidden=16,
                     tau_blocks=1)
    net = parser.get_parsed_content("relearn_net")
    assert isinstance(net, RelearnNet) and net.clip_length == 4 and net.frozen == ("head", "backbone.f_stages")
    tree = part_config(net)
    assert tree["tau"]["_target_"] == "medvos.networks.tau.TAUTranslator"
    assert (tree["tau"]["frames"], tree["tau"]["channels"], tree["tau"]["hidden"]) == (4, 16, 16)
    assert tree["image_model"] == part_config(image)
    ckpt = tmp_path / "relearned.pt"
    torch.save({"model": net.state_dict(), "spec": ModelSpec(net, 32).state_dict()}, ckpt)
    loaded = load_model(ckpt)
    assert isinstance(loaded, RelearnNet) and loaded.clip_length == 4 and checkpoint_clip_length(ckpt) == 4
    x = torch.rand(4, 7, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), net.eval()(x))


def test_format_1_specs_still_load(tmp_path):
    """Files written by 0.3.0-0.6.0 hold image-model and TAU arguments; they are read as the same tree."""
    from medvos.networks.checkpoint import (INTENSITY, CheckpointError, checkpoint_clip_length, checkpoint_spec,
                                           load_model)
    from medvos.networks.parts import part_config
    from medvos.networks.relearn_model import RelearnNet

    net = RelearnNet.from_sizes(FewShotSegNet.from_sizes(backbone_weights=None, channels=16, neck_depth=2), 4, 16, 1)
    old = {"format": 1, "medvos_version": "0.6.0", "network": {"channels": 16, "neck_depth": 2},
           "relearn": {"window": 4, "tau_hidden": 16, "tau_blocks": 1},
           "preprocessing": {"image_size": [32, 32], "intensity": INTENSITY, "colour": "RGB"}, "training": {}}
    ckpt = tmp_path / "old.pt"
    torch.save({"model": net.state_dict(), "spec": old}, ckpt)
    spec = checkpoint_spec(ckpt)
    assert spec["format"] == 2 and "relearn" not in spec and spec["network"] == part_config(net)
    assert checkpoint_clip_length(ckpt) == 4 and isinstance(load_model(ckpt), RelearnNet)
    newer = tmp_path / "newer.pt"
    torch.save({"model": net.state_dict(), "spec": {**old, "format": 3, "medvos_version": "9.0.0"}}, newer)
    with pytest.raises(CheckpointError, match=r"newer.pt: spec format 3 \(medvos 9.0.0\) is newer"):
        load_model(newer)


@pytest.mark.parametrize("change, message", [
    (lambda t: t["backbone"].update({"_target_": "os.system"}), "names 'os.system', not a class of medvos.networks"),
    (lambda t: t["neck"].update({"channels": "$__import__('os').getpid()"}), "neck.channels=.* is an expression"),
    (lambda t: t["head"].update({"channels": "@channels"}), "is an expression or reference"),
    (lambda t: t.update({"_requires_": "$print(1)"}), "'_requires_': only '_target_' may be special"),
    (lambda t: t["fusion"].update({"out_channels": 8}), "network parts do not fit together"),
])
def test_a_saved_network_config_is_data_not_code(tmp_path, change, message):
    from medvos.networks.checkpoint import CheckpointError, ModelSpec, load_model

    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16)
    spec = ModelSpec(net, 32).state_dict()
    change(spec["network"])
    ckpt = tmp_path / "hostile.pt"
    torch.save({"model": net.state_dict(), "spec": spec}, ckpt)
    with pytest.raises(CheckpointError, match=f"hostile.pt: .*{message}"):
        load_model(ckpt)


def test_parts_that_do_not_fit_are_refused_by_name():
    backbone = build_backbone("efficientnet-lite0", None)
    with pytest.raises(ValueError, match="fusion -> neck"):
        FewShotSegNet(backbone, PseudoMask(), CrossResolutionFusion(40, 32), GFPNNeck(16), SegmentationHead(16))
