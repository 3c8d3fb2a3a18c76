"""medvos: few-shot medical video object segmentation (image knowledge + spatiotemporal consistency relearning)."""

from __future__ import annotations

__version__ = "0.28.0"

from medvos.command_line import install_for_bundle_command as _install_for_bundle_command

_install_for_bundle_command()
