"""medvos: few-shot medical video object segmentation (image knowledge + spatiotemporal consistency relearning)."""

from __future__ import annotations

__version__ = "0.3.0"
