"""The exported inference path (issue 16, item 1): OpenVINO or ONNX Runtime runs the per-frame path of phase-1 and
relearned models; masks equal PyTorch's (the reference) on synthetic cines; graphs are cached per model version."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvos.inference.propagator import FewShotPropagator
from medvos.networks.exported import OnnxNetwork, cache_dir, for_runtime
from medvos.networks.image_model import FewShotSegNet
from medvos.networks.relearn_model import RelearnNet

SIZE = 48


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    inter, total = np.logical_and(a, b).sum(), a.sum() + b.sum()
    return 1.0 if total == 0 else 2 * inter / total


def _decisive(net: torch.nn.Module, frames: torch.Tensor, labels: torch.Tensor) -> torch.nn.Module:
    """Shift the head's foreground bias so a random network segments about half of each frame (a real test)."""
    net.eval()
    x = torch.nn.functional.interpolate(frames[:2], size=(SIZE, SIZE), mode="bilinear")
    m = torch.nn.functional.interpolate(labels[:1, None].float(), size=(SIZE, SIZE))
    with torch.no_grad():
        logits = net.segment(x[1:], net.encode_support(x[None, :1], m[None]), (SIZE, SIZE))
        last = [mod for mod in net.head.modules() if isinstance(mod, torch.nn.Conv2d)][-1]
        last.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    return net


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("kind", ["phase 1", "relearned"])
def test_exported_masks_equal_pytorch_on_synthetic_cines(endo_small, echo_small, kind, backend):
    torch.manual_seed(0)
    base = FewShotSegNet.from_sizes(backbone_weights=None, channels=16, neck_levels=2, neck_depth=2)
    net = base if kind == "phase 1" else RelearnNet.from_sizes(base, clip_length=4, tau_hidden=32, tau_blocks=1)
    for cine in (endo_small, echo_small):
        frames = torch.from_numpy(cine.frames.astype(np.float32) / 255.0)
        frames = frames.repeat(1, 3 // frames.shape[1], 1, 1)
        labels = torch.from_numpy(cine.labels)
        _decisive(net, frames, labels)
        ref, _, _ = FewShotPropagator(net, SIZE, 4).propagate(frames, labels, [0])
        out, _, _ = FewShotPropagator(OnnxNetwork(net, SIZE, 4, backend=backend), SIZE, 4).propagate(frames, labels,
                                                                                                   [0])
        assert 0.05 < (ref[1:] > 0).mean() < 0.95, "the test network must segment part of each frame"
        assert min(_dice(a > 0, b > 0) for a, b in zip(ref, out)) >= 0.995  # 6 frames: a short last window too


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_several_shots_and_any_window_length(backend):
    torch.manual_seed(1)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16, neck_levels=2, neck_depth=2).eval()
    onnx = OnnxNetwork(net, SIZE, 4, backend=backend)
    q = torch.rand(6, 3, SIZE, SIZE)
    mask = torch.zeros(1, 2, 1, SIZE, SIZE)
    mask[..., 10:30, 5:20] = 1
    with torch.inference_mode():
        support = net.encode_support(torch.rand(1, 2, 3, SIZE, SIZE), mask)  # K = 2 shots
        ref = net.segment_encoded(net.encode_query(q), support, (SIZE, SIZE))
        got = onnx.segment_encoded(onnx.encode_query(q), support, (SIZE, SIZE))  # 6 frames = 4 + 2 (padded)
    assert torch.allclose(ref, got, atol=1e-3)
    with pytest.raises(ValueError, match="exported at"):
        onnx.encode_query(torch.rand(1, 3, SIZE + 8, SIZE))
    with pytest.raises(RuntimeError, match="inference only"):
        onnx.train()


def test_graphs_are_cached_per_model_version():
    torch.manual_seed(2)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16, neck_levels=2, neck_depth=2).eval()
    first = for_runtime(net, "onnxruntime", SIZE, 4)
    assert for_runtime(net, "onnxruntime", SIZE, 4) is first  # same weights: the same sessions
    assert for_runtime(net, "openvino", SIZE, 4).backend == "openvino"  # the same graph files, another runtime
    graphs = sorted(cache_dir().glob("*.onnx"))
    stamps = [p.stat().st_mtime_ns for p in graphs]
    OnnxNetwork(net, SIZE, 4)  # a new process would load these files, not export again
    assert [p.stat().st_mtime_ns for p in graphs] == stamps
    with torch.no_grad():
        next(net.parameters()).add_(0.01)  # changed weights: another version
    assert for_runtime(net, "onnxruntime", SIZE, 4) is not first
    assert for_runtime(net, "torch", SIZE, 4) is net
    with pytest.raises(ValueError, match="unknown runtime"):
        for_runtime(net, "tensorrt", SIZE, 4)


def test_a_network_that_cannot_be_exported_runs_in_pytorch(caplog):
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16).eval()  # 3 neck levels: 40 px gives 5 -> 3 -> 2
    with caplog.at_level("WARNING"):
        assert for_runtime(net, "onnxruntime", 40, 4) is net
    assert "cannot be exported" in caplog.text


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_a_network_used_once_is_exported_outside_the_cache(backend):
    """``keep=False`` (a network tuned on one cine): exported into a temporary folder, removed at once; neither the
    cache nor the kept sessions grow, and a new number of shots still compiles (OpenVINO read the graph once)."""
    torch.manual_seed(4)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16, neck_levels=2, neck_depth=2).eval()
    before = sorted(cache_dir().glob("*.onnx")) if cache_dir().is_dir() else []
    once = for_runtime(net, backend, SIZE, 4, keep=False)
    assert isinstance(once, OnnxNetwork) and once is not for_runtime(net, backend, SIZE, 4, keep=False)
    assert (sorted(cache_dir().glob("*.onnx")) if cache_dir().is_dir() else []) == before
    q = torch.rand(5, 3, SIZE, SIZE)
    mask = torch.zeros(1, 3, 1, SIZE, SIZE)
    mask[..., 8:30, 6:22] = 1
    with torch.inference_mode():
        support = net.encode_support(torch.rand(1, 3, 3, SIZE, SIZE), mask)  # K = 3: a shape not compiled yet
        ref = net.segment_encoded(net.encode_query(q), support, (SIZE, SIZE))
        got = once.segment_encoded(once.encode_query(q), support, (SIZE, SIZE))
    assert torch.allclose(ref, got, atol=1e-3)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_a_network_tuned_with_its_backbone_frozen_shares_the_exported_query_graph(backend):
    """:func:`for_tuned`: a copy whose backbone is unchanged runs the base's exported query graph and its own rest
    in PyTorch (its logits); a copy whose backbone changed does not share it: PyTorch for a short video, its own
    export for a long one; PyTorch everywhere under ``torch``."""
    import copy

    from medvos.networks.exported import EXPORT_PAYS_FRAMES, SharedQueryNetwork, for_tuned, query_encoder

    torch.manual_seed(5)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16, neck_levels=2, neck_depth=2).eval()
    base = for_runtime(net, backend, SIZE, 4)
    tuned = copy.deepcopy(net)
    with torch.no_grad():
        next(tuned.head.parameters()).add_(0.05)  # tuning changed the head, not the backbone
    shared = for_tuned(tuned, base, backend, SIZE, 4, num_frames=20)
    assert isinstance(shared, SharedQueryNetwork) and for_runtime(shared, backend, SIZE, 4) is shared
    assert query_encoder(shared) is base and query_encoder(base) is base  # one encoder: encodings are reusable
    assert query_encoder(tuned) is None  # PyTorch: a tuning may have changed it
    q = torch.rand(5, 3, SIZE, SIZE)
    mask = torch.zeros(1, 1, 1, SIZE, SIZE)
    mask[..., 8:30, 6:22] = 1
    with torch.inference_mode():
        support = shared.encode_support(q[None, :1], mask)
        ref = tuned.segment_encoded(tuned.encode_query(q), support, (SIZE, SIZE))
        got = shared.segment_encoded(shared.encode_query(q), support, (SIZE, SIZE))
        untuned = net.segment_encoded(net.encode_query(q), support, (SIZE, SIZE))
    assert torch.allclose(ref, got, atol=1e-3) and not torch.allclose(untuned, got, atol=1e-3)
    with pytest.raises(RuntimeError, match="inference only"):
        shared.train()
    with torch.no_grad():
        next(tuned.backbone.parameters()).add_(0.01)  # a tuning that trained the backbone
    assert SharedQueryNetwork.of(base, tuned) is None
    assert for_tuned(tuned, base, backend, SIZE, 4, num_frames=20) is tuned
    assert isinstance(for_tuned(tuned, base, backend, SIZE, 4, num_frames=EXPORT_PAYS_FRAMES), OnnxNetwork)
    assert for_tuned(tuned, net, "torch", SIZE, 4, num_frames=EXPORT_PAYS_FRAMES) is tuned
