"""Pseudo mask: where the query looks like the (masked) support, from deep backbone features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medvos.networks.parts import Part


class PseudoMask(Part):
    """``p(x) = max_{y in support mask} cos(Fq(x), Fs(y))``, min-max normalised per image, averaged over shots.

    Follows PFENet's prior mask: the support mask is downsampled to the feature grid by area averaging
    (any covered cell counts as inside); computed without gradient (the deep stage F is frozen).
    """

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    @torch.no_grad()
    def forward(self, query_deep: torch.Tensor, support_deep: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            query_deep: ``(B, C, h, w)`` deep features of the query.
            support_deep: ``(B, K, C, h', w')`` deep features of the masked support images.
            support_mask: ``(B, K, 1, H, W)`` binary support masks at image resolution, or already area-averaged onto
                the deep feature grid ``(B, K, 1, h', w')`` (what the exported graph takes).

        Returns:
            ``(B, 1, h, w)`` pseudo mask in [0, 1].
        """
        b, k, c, hs, ws = support_deep.shape
        m = support_mask.flatten(0, 1).float()
        if tuple(m.shape[-2:]) != (hs, ws):  # at image resolution (a mask already on the feature grid is used as is)
            m = F.adaptive_avg_pool2d(m, (hs, ws))
        m = m.reshape(b, k, hs * ws)
        q = F.normalize(query_deep.flatten(2), dim=1, eps=self.eps)  # (B, C, Nq)
        s = F.normalize(support_deep.flatten(3), dim=2, eps=self.eps)  # (B, K, C, Ns)
        sim = torch.einsum("bcq,bkcs->bkqs", q, s)  # (B, K, Nq, Ns)
        sim = sim.masked_fill((m <= 0).unsqueeze(2), -2.0)
        p = sim.max(dim=3).values  # (B, K, Nq)
        empty = (m <= 0).all(dim=2, keepdim=True)
        p = torch.where(empty, torch.zeros_like(p), p)
        lo, hi = p.min(dim=2, keepdim=True).values, p.max(dim=2, keepdim=True).values
        p = (p - lo) / (hi - lo + self.eps)
        return p.mean(dim=1).view(b, 1, *query_deep.shape[-2:])
