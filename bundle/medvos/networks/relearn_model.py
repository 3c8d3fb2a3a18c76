"""Phase-2 relearning model: a copy of the image model with a TAU between neck and head; the head is frozen."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from medvos.networks.image_model import FewShotModel, FewShotSegNet, SupportEncoding, unpack_episode
from medvos.networks.tau import TAUTranslator

CLIP_LENGTH, TAU_HIDDEN, TAU_BLOCKS = 8, 256, 2  # |B| and the TAU size by default (train.yaml: clip_length, tau_*)
FROZEN = ("head", "backbone.f_stages")  # what phase 2 does not train (relearn.yaml `frozen_modules`)


class RelearnNet(FewShotModel):
    """Image model + TAU (Zheng et al. 2024, phase 2), composed from its parts (``relearn.yaml``'s
    ``relearn_net``; :meth:`from_sizes` builds the TAU from a few numbers).

    Query frames passed to :meth:`features`/:meth:`segment` are consecutive frames of one video; they are cut into
    windows of ``tau.frames`` frames (|B|; the last window padded by repeating its last frame) for the TAU.

    Args:
        image_model: the trained phase-1 model; it is deep-copied (the original can serve as frozen teacher).
        tau: the temporal translator put between neck and head (its ``channels``: the image model's width).
        frozen: dotted names of the parts not trained (default the head and the pseudo mask's deep stage F).
    """

    def __init__(self, image_model: FewShotSegNet, tau: TAUTranslator, frozen: Sequence[str] = FROZEN) -> None:
        super().__init__()
        if tau.channels != image_model.channels:
            raise ValueError(f"the TAU takes {tau.channels} channels, the image model's neck gives "
                             f"{image_model.channels}")
        base = copy.deepcopy(image_model)
        self.backbone, self.pseudo_mask, self.fusion = base.backbone, base.pseudo_mask, base.fusion
        self.neck, self.head = base.neck, base.head
        self.train_backbone = base.train_backbone
        self.channels = base.channels
        self.clip_length = tau.frames
        self.tau = tau
        self.annotation_tuned = False  # grown from a model tuned on the cine's annotation (test-time relearning)
        self.one_cine = False  # relearned on one cine (test-time relearning): its runtime is not kept
        # Paper: everything trains except the head (and, here, the frozen deep stage F of the pseudo mask).
        for p in self.backbone.parameters():
            p.requires_grad_(True)
        self.frozen = tuple(frozen)
        for name in self.frozen:
            try:
                part = self.get_submodule(name)
            except AttributeError as exc:
                raise ValueError(f"frozen module {name!r} is not a part of the relearning model") from exc
            for p in part.parameters():
                p.requires_grad_(False)

    @classmethod
    def from_sizes(cls, image_model: FewShotSegNet, clip_length: int = CLIP_LENGTH, tau_hidden: int = TAU_HIDDEN,
                   tau_blocks: int = TAU_BLOCKS, drop_path: float = 0.1, frozen: Sequence[str] = FROZEN
                   ) -> RelearnNet:
        """``image_model`` + a TAU of ``clip_length`` (|B|) frames, ``tau_hidden`` channels, ``tau_blocks`` blocks."""
        return cls(image_model, TAUTranslator(clip_length, image_model.channels, tau_hidden, tau_blocks,
                                              drop_path=drop_path), frozen)

    def train(self, mode: bool = True) -> RelearnNet:
        """Training mode for the TAU only as far as normalisation goes: the copied image-model parts keep their
        BatchNorm statistics frozen (a clip of |B| nearly identical frames is a poor batch estimate; choice), while
        their weights train; the head is entirely frozen."""
        super().train(mode)
        for part in (self.backbone, self.fusion, self.neck, self.head):
            for m in part.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def temporal(self, feats: torch.Tensor) -> torch.Tensor:
        """TAU over consecutive frames ``(N, C, h, w)`` (any N; padded to whole windows)."""
        n = feats.shape[0]
        pad = (-n) % self.clip_length
        if pad:
            feats = torch.cat([feats, feats[-1:].expand(pad, *feats.shape[1:])], dim=0)
        return self.tau(feats)[:n]

    def relearn_outputs(self, query: torch.Tensor, support: SupportEncoding, out_size: tuple[int, int]
                        ) -> dict[str, torch.Tensor]:
        """``{"neck": z^ (before TAU), "tau": f (TAU output), "logits": head(f)}`` for one clip of frames."""
        neck = self.neck_features(query, support)
        tau = self.temporal(neck)
        return {"neck": neck, "tau": tau, "logits": self.head(tau, out_size)}

    def forward(self, x: torch.Tensor, support: torch.Tensor | None = None, support_mask: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
        """Two call forms.

        - ``forward(packed)``: packed episodes ``(B, 3+4K, H, W)`` whose queries are consecutive frames -> logits.
        - ``forward(clip, support, support_mask[, extra])``: one relearning step's pass (so DistributedDataParallel
          sees it): clip ``(B,3,H,W)``, support ``(1,K,3,H,W)``, mask ``(1,K,1,H,W)`` -> :meth:`relearn_outputs`,
          plus ``"extra_logits"`` for ``extra`` frames ``(B,3,H,W)`` (TPS's strongly augmented view).
        """
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if support is None:
            query, sup, mask = unpack_episode(x)
            enc = self.encode_support(sup[:1], mask[:1])
            return self.segment(query, enc, size)
        enc = self.encode_support(support, support_mask)
        out = self.relearn_outputs(x, enc, size)
        if extra is not None:
            out["extra_logits"] = self.segment(extra, enc, size)
        return out
