"""The forward passes' arithmetic (medvos.networks.precision): the one check of the three values, ``auto``'s choice,
and the trainers' inferer (bf16 forward, float32 logits and weights)."""

from unittest import mock

import pytest
import torch
from torch import nn

from medvos.networks import precision
from medvos.networks.precision import PRECISIONS, PrecisionInferer, check_precision, uses_bf16


class _Probe(nn.Module):
    """A convolution that records the dtype it computed in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        self.seen.append(out.dtype)
        return out


def test_a_bad_precision_is_refused_with_the_option_named():
    assert all(check_precision(p) == p for p in PRECISIONS)
    with pytest.raises(ValueError, match="train_precision 'fp16'"):
        check_precision("fp16", "train_precision")
    with pytest.raises(ValueError, match="train_precision"):
        PrecisionInferer("half")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_where_native(native):
    with mock.patch.object(precision, "native_bf16", return_value=native):
        assert uses_bf16("auto", "cpu") is native
        assert uses_bf16("bfloat16", "cpu") and not uses_bf16("float32", "cpu")
    assert precision.native_bf16("meta") is False


def test_the_inferer_computes_in_bf16_and_returns_float32_logits_with_float32_gradients():
    torch.manual_seed(0)
    net, x = _Probe(), torch.rand(2, 3, 8, 8)
    plain = PrecisionInferer("float32")(x, net)
    bf16 = PrecisionInferer("bfloat16")(x, net)
    assert net.seen == [torch.float32, torch.bfloat16]
    assert plain.dtype == bf16.dtype == torch.float32
    assert not torch.equal(plain, bf16) and torch.allclose(plain, bf16, atol=0.05)
    bf16.sum().backward()
    assert net.conv.weight.grad is not None and net.conv.weight.grad.dtype == torch.float32
    assert net.conv.weight.dtype == torch.float32
