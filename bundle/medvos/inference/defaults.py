"""The `inferring` defaults, read from ``bundle/configs/inference.yaml`` (their one source), and the propagator they
configure for a checkpoint. The benchmark, the evaluation scripts and the MONAI Label app use these, so every
consumer scores exactly what `inferring` does."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "inference.yaml"
KEYS = ("fusion", "threshold", "memory_tree", "pathways")


@lru_cache(maxsize=1)
def inference_defaults() -> dict[str, Any]:
    """``{"fusion", "threshold", "memory_tree", "pathways"}`` as set in ``inference.yaml``."""
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    missing = [k for k in KEYS if k not in config]
    if missing:
        raise KeyError(f"{CONFIG}: missing inference defaults {missing}")
    return {k: config[k] for k in KEYS}


def make_propagator(network: nn.Module, image_size: int, window: int, **overrides: Any) -> Any:
    """The propagator `inferring` builds: :class:`MemoryTreePropagator` or :class:`FewShotPropagator` with the
    defaults of ``inference.yaml`` (``overrides`` replace them, e.g. ``memory_tree=False``)."""
    from medvos.inference.memory_tree import MemoryTreePropagator
    from medvos.inference.propagator import FewShotPropagator

    opts = {**inference_defaults(), **overrides}
    if opts["memory_tree"]:
        return MemoryTreePropagator(network, image_size, window, opts["threshold"], opts["fusion"],
                                    pathways=int(opts["pathways"]))
    return FewShotPropagator(network, image_size, window, opts["threshold"], opts["fusion"])
