"""Loading trained weights safely (``torch.load(weights_only=True)``) with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not fit the network."""


def load_state(path: str | Path) -> dict[str, Any]:
    """The state dict of a checkpoint (a plain state dict, or ``{"model": state}`` as written by CheckpointSaver)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint, corrupt or truncated ({type(exc).__name__}: "
                              f"{exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: checkpoint holds {type(obj).__name__}, expected a state dict")
    return obj


def model_state(path: str | Path) -> dict[str, Any]:
    """The network weights of a checkpoint: a plain state dict, or its ``"model"`` entry (resume checkpoints)."""
    state = load_state(path)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(network: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load a checkpoint into ``network`` (DDP ``module.`` prefixes stripped)."""
    state = model_state(path)
    try:
        network.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {type(network).__name__} ({str(exc)[:500]})") from exc
    return network


def is_relearned(path: str | Path) -> bool:
    """Whether a checkpoint holds a phase-2 model (it has TAU weights)."""
    return any(k.startswith("tau.") for k in model_state(path))


def load_model(path: str | Path, image_model: nn.Module, window: int = 8, tau_hidden: int = 256,
               tau_blocks: int = 2) -> nn.Module:
    """A phase-1 or phase-2 checkpoint into the right network (built around ``image_model``'s architecture)."""
    if is_relearned(path):
        from medvos.networks.relearn_model import RelearnNet

        return load_weights(RelearnNet(image_model, window, tau_hidden, tau_blocks), path)
    return load_weights(image_model, path)
