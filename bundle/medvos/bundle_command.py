"""Command lines that run this bundle's workflows (``python -m monai.bundle run ...``) from other tools."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def bundle_command(run_id: str, configs: Sequence[str], **overrides: Any) -> list[str]:
    """``python -m monai.bundle run <run_id>`` over ``configs`` (file names in ``bundle/configs``, merged in order),
    with the bundle's metadata and logging config and ``--key value`` per override (``repr`` for lists)."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id,
           "--config_file", repr([str(CONFIGS / c) for c in configs]),
           "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", repr(list(value)) if isinstance(value, (list, tuple)) else str(value)]
    return cmd
