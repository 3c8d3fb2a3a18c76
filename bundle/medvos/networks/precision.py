"""The arithmetic of a network's forward passes: float32, or bfloat16 under autocast (the loss, the gradients and
the weights stay float32). One place for the choice, used by phase-1 training (``train_precision``) and
test-time tuning (``tune_precision``).

``auto`` takes bfloat16 only where the device computes it natively; elsewhere PyTorch emulates it, slower than
float32, so ``auto`` is then float32 and the result is float32's.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from monai.inferers import SimpleInferer

PRECISIONS = ("float32", "bfloat16", "auto")


def check_precision(precision: str, option: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; a ``ValueError`` naming ``option`` otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"{option} {precision!r}: expected one of {PRECISIONS}")
    return precision


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively: a GPU that supports it, or a CPU with AVX-512 BF16 or AMX
    (elsewhere PyTorch emulates it, slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def uses_bf16(precision: str, device: torch.device | str) -> bool:
    """Whether ``precision`` (one of :data:`PRECISIONS`) means bfloat16 forward passes on ``device``."""
    check_precision(precision)
    return precision == "bfloat16" or (precision == "auto" and native_bf16(device))


def autocast(bf16: bool, device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on ``device`` where ``bf16``; a no-op context otherwise."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


class PrecisionInferer(SimpleInferer):
    """MONAI's ``SimpleInferer`` with the forward pass in ``precision`` (:data:`PRECISIONS`) and float32 logits out,
    so the loss and what follows stay float32. MONAI's trainers offer mixed precision (``amp``) on CUDA only; this
    gives their forward bfloat16 on a CPU that computes it natively as well."""

    def __init__(self, precision: str = "float32") -> None:
        super().__init__()
        self.precision = check_precision(precision, "train_precision")

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        with autocast(uses_bf16(self.precision, inputs.device), inputs.device):
            out = super().__call__(inputs, network, *args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) else out
