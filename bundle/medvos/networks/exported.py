"""The per-frame path of a few-shot network exported to ONNX and run by OpenVINO (``runtime: openvino``, the default;
``openvino-bf16``) or ONNX Runtime (``runtime: onnxruntime``), PyTorch kept as the reference (``runtime: torch``).

Propagation calls a network three ways (:class:`medvos.inference.propagator.FewShotPropagator`): ``encode_support``
once per annotation, ``encode_query`` once per window of frames, ``segment_encoded`` once per window and support.
:class:`OnnxNetwork` keeps the first in PyTorch (rare, and the memory tree adds supports at run time) and exports the
other two as ONNX graphs at the network's input size:

- **query graph**: frames ``(B, 3, H, W)`` -> ``(G(q), F(q))``, run in batches of :data:`QUERY_BATCH` frames
  (per-frame work; the last batch padded by its last frame);
- **segment graph**: ``(G(q), F(q))`` and a support encoding (any K shots; its mask area-averaged onto the deep
  feature grid beforehand) -> logits ``(window, 2, H, W)``: pseudo mask, fusion, neck, TAU (relearned models) and
  head. Exported at B = window; a shorter window is padded by
  repeating its last frame's features, as the relearned model pads its last TAU window itself, and cut back.

Exported graphs are cached by a fingerprint of the weights, the input size, the window and the versions (in
``$MEDVOS_CACHE``, default ``~/.cache/medvos/onnx``), so only the first run of a model pays the export (seconds).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)
RUNTIMES = ("torch", "onnxruntime", "openvino", "openvino-bf16")
# frames from which exporting a network used for one video (tuned on it) pays: the export and compile take about
# 5 s, the exported graph saves about 19 ms per frame at 256 px on 2 cores (model card, "Test-time tuning")
EXPORT_PAYS_FRAMES = 300
QUERY_BATCH = 1  # frames per query-graph call: fastest one at a time (cache; OpenVINO 267 vs 191 frames/s at 8)
OPSET = 17


def cache_dir() -> Path:
    return Path(os.environ.get("MEDVOS_CACHE", Path.home() / ".cache" / "medvos")) / "onnx"


def fingerprint(network: nn.Module, *extra: Any) -> str:
    """sha256 of the weights (names, shapes, bytes) and ``extra`` (input size, clip length, versions)."""
    from medvos import __version__

    digest = hashlib.sha256(repr((type(network).__name__, extra, torch.__version__, __version__, OPSET)).encode())
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def _exportable(network: nn.Module) -> nn.Module:
    """A copy without in-place activations (the TorchScript exporter mis-traces ReLU6(inplace=True) after the
    backbone's batch norms), in eval mode on the CPU."""
    net = copy.deepcopy(network).cpu().eval()
    for module in net.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish)) and getattr(child, "inplace", False):
                child.inplace = False
    return net


class _QueryGraph(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.encode_query(query)


class _SegmentGraph(nn.Module):
    def __init__(self, net: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.net, self.size = net, size

    def forward(self, q_mid: torch.Tensor, q_deep: torch.Tensor, s_deep: torch.Tensor, s_mask: torch.Tensor,
                s_mid: torch.Tensor) -> torch.Tensor:
        return self.net.segment_encoded((q_mid, q_deep), (s_deep, s_mask, s_mid), self.size)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> None:
    import warnings

    from medvos.io.atomic import atomic_path

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's notices (traced padding sizes are constants)
        torch.onnx.export(module, args, buf, input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          opset_version=OPSET, dynamo=False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


class _OrtRunner:
    """An ONNX graph in ONNX Runtime's CPU provider (dynamic batch and shots; thread-safe)."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)


class _OpenVinoRunner:
    """An ONNX graph compiled by OpenVINO for the CPU at the static shapes it is fed (compiled once per new set of
    input shapes; callers pad to whole batches), fp32 or bf16 arithmetic."""

    def __init__(self, path: Path, threads: int, precision: str = "f32") -> None:
        import threading

        import openvino as ov

        self.core = ov.Core()
        self.model = self.core.read_model(str(path))  # read once: the file may be temporary
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads),
                       "INFERENCE_PRECISION_HINT": precision}
        self.compiled: dict[tuple, Any] = {}
        self.lock = threading.Lock()

    def _request(self, feeds: dict[str, np.ndarray]) -> Any:
        shapes = tuple((k, tuple(v.shape)) for k, v in sorted(feeds.items()))
        if shapes not in self.compiled:
            model = self.model.clone()
            model.reshape({k: list(v) for k, v in shapes})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self.compiled[shapes] = (compiled, compiled.create_infer_request())
        return self.compiled[shapes]

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self.lock:  # one infer request per compiled shape
            compiled, request = self._request(feeds)
            result = request.infer(feeds)
            return [np.array(result[compiled.output(i)]) for i in range(len(compiled.outputs))]


RUNNERS: dict[str, Any] = {"onnxruntime": _OrtRunner, "openvino": _OpenVinoRunner,
                           "openvino-bf16": lambda path, threads: _OpenVinoRunner(path, threads, "bf16")}


class _InferenceOnly(nn.Module):
    """A network that runs (part of) an exported graph: eval mode only."""

    def train(self, mode: bool = True) -> _InferenceOnly:
        if mode:
            raise RuntimeError(f"{type(self).__name__} runs an exported graph: it is for inference only (train the "
                               "PyTorch network)")
        return super().train(False)


class OnnxNetwork(_InferenceOnly):
    """A few-shot network whose query encoding and segmentation run as exported graphs in OpenVINO or ONNX Runtime
    (see the module docstring).

    Args:
        network: a :class:`~medvos.networks.image_model.FewShotSegNet` or
            :class:`~medvos.networks.relearn_model.RelearnNet` (weights as they are now).
        image_size: the input size the graphs are exported at (the propagator's).
        clip_length: frames per window (the segment graph's batch; a relearned model's |B|).
        threads: the runtime's threads (default: PyTorch's thread count).
        key: the weights' :func:`fingerprint` when the caller has it.
        folder: where the graphs are exported (default: the cache, :func:`cache_dir`).
        backend: what runs the graphs: ``onnxruntime``, ``openvino`` (fp32) or ``openvino-bf16``.
    """

    def __init__(self, network: nn.Module, image_size: int | tuple[int, int], clip_length: int = 8,
                 threads: int | None = None, key: str | None = None, backend: str = "onnxruntime",
                 folder: Path | None = None) -> None:
        super().__init__()
        self.torch_network = network
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        self.clip_length = int(clip_length)
        key = key or fingerprint(network, self.size, self.clip_length)
        folder = folder or cache_dir()
        query_path, segment_path = folder / f"{key}.query.onnx", folder / f"{key}.segment.onnx"
        if not (query_path.is_file() and segment_path.is_file()):
            self._export(query_path, segment_path)
        if backend not in RUNNERS:
            raise ValueError(f"unknown backend {backend!r} (expected one of {tuple(RUNNERS)})")
        self.backend = backend
        runner, n = RUNNERS[backend], int(threads or torch.get_num_threads())
        self.query_batch = min(self.clip_length, QUERY_BATCH)
        self.query_run = runner(query_path, n)
        self.segment_run = runner(segment_path, n)
        self._warm_up()
        logger.info("%s runs the exported graphs %s (%s) of %s at %s", backend, key, folder, type(network).__name__,
                    self.size)

    def _warm_up(self) -> None:
        """One window through both graphs (one shot), so compiling and first allocations happen at set-up, not on a
        user's first window."""
        q = torch.zeros(self.clip_length, 3, *self.size)
        mask = torch.zeros(1, 1, 1, *self.size)
        mask[..., : self.size[0] // 2, : self.size[1] // 2] = 1
        with torch.inference_mode():
            self.segment_encoded(self.encode_query(q), self.encode_support(q[None, :1], mask), self.size)

    def _export(self, query_path: Path, segment_path: Path) -> None:
        net = _exportable(self.torch_network)
        q = torch.rand(self.clip_length, 3, *self.size)
        with torch.no_grad():
            q_mid, q_deep = net.encode_query(q)
            mask = torch.zeros(1, 1, 1, *self.size)
            mask[..., self.size[0] // 4: self.size[0] // 2, self.size[1] // 4: self.size[1] // 2] = 1
            s_deep, s_mask, s_mid = net.encode_support(q[None, :1], mask)
            s_mask = _grid_mask(s_mask, s_deep)
        _export(_QueryGraph(net), (q,), query_path, ["query"], ["q_mid", "q_deep"],
                {"query": {0: "frames"}, "q_mid": {0: "frames"}, "q_deep": {0: "frames"}})
        _export(_SegmentGraph(net, self.size), (q_mid, q_deep, s_deep, s_mask, s_mid), segment_path,
                ["q_mid", "q_deep", "s_deep", "s_mask", "s_mid"], ["logits"],
                {"s_deep": {1: "shots"}, "s_mask": {1: "shots"}})

    def encode_support(self, support: torch.Tensor, support_mask: torch.Tensor) -> Any:
        with torch.inference_mode() if not torch.is_inference_mode_enabled() else contextlib.nullcontext():
            return self.torch_network.encode_support(support, support_mask)

    def encode_query(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(query.shape[-2:]) != self.size:
            raise ValueError(f"query frames of size {tuple(query.shape[-2:])}; the graph was exported at {self.size}")
        mids, deeps, step = [], [], self.query_batch
        for start in range(0, query.shape[0], step):  # whole batches (a static shape), the last padded
            q = query[start: start + step]
            pad = step - q.shape[0]
            if pad:
                q = torch.cat([q, q[-1:].expand(pad, *q.shape[1:])])
            q_mid, q_deep = self.query_run({"query": _np(q)})
            mids.append(q_mid[: step - pad])
            deeps.append(q_deep[: step - pad])
        return torch.from_numpy(np.concatenate(mids)), torch.from_numpy(np.concatenate(deeps))

    def segment_encoded(self, query_enc: tuple[torch.Tensor, torch.Tensor], support: Any,
                        out_size: tuple[int, int]) -> torch.Tensor:
        if tuple(out_size) != self.size:
            raise ValueError(f"output size {tuple(out_size)}; the graph was exported at {self.size}")
        q_mid, q_deep = query_enc
        s_deep, s_mask, s_mid = support
        s_deep, s_mask, s_mid = _np(s_deep), _np(_grid_mask(s_mask, s_deep)), _np(s_mid)
        n, out = q_mid.shape[0], []
        for start in range(0, n, self.clip_length):  # whole windows, the last padded by its last frame (as TAU pads)
            mid, deep = q_mid[start: start + self.clip_length], q_deep[start: start + self.clip_length]
            pad = self.clip_length - mid.shape[0]
            if pad:
                mid = torch.cat([mid, mid[-1:].expand(pad, *mid.shape[1:])])
                deep = torch.cat([deep, deep[-1:].expand(pad, *deep.shape[1:])])
            (logits,) = self.segment_run({"q_mid": _np(mid), "q_deep": _np(deep), "s_deep": s_deep, "s_mask": s_mask,
                                          "s_mid": s_mid})
            out.append(torch.from_numpy(logits[: self.clip_length - pad]))
        return torch.cat(out)


class SharedQueryNetwork(_InferenceOnly):
    """A network tuned on one video with its backbone frozen (``tune_backbone_lr_mult: 0``), running the query
    encoding, per-frame and most of the time, in the exported graph of the network it was tuned from (the same
    backbone, so the same function), and the rest (support encoding, pseudo mask, fusion, neck, head: what tuning
    changed) in PyTorch. No export per video: the tuned network propagates at about the exported network's speed.
    Build it with :meth:`of`, which checks that the backbones are identical."""

    def __init__(self, exported: OnnxNetwork, tuned: nn.Module) -> None:
        super().__init__()
        self.exported, self.tuned = exported, tuned

    @classmethod
    def of(cls, base: nn.Module, tuned: nn.Module) -> SharedQueryNetwork | None:
        """``tuned`` sharing ``base``'s exported query graph, or None where ``base`` is not exported or the
        backbones differ (a tuning that trained the backbone)."""
        if not isinstance(base, OnnxNetwork) or not hasattr(tuned, "backbone"):
            return None
        ours, theirs = base.torch_network.backbone.state_dict(), tuned.backbone.state_dict()
        if ours.keys() != theirs.keys() or not all(torch.equal(ours[k], theirs[k].to(ours[k].device))
                                                  for k in ours):
            return None
        return cls(base, tuned)

    def encode_query(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.exported.encode_query(query)

    def encode_support(self, support: torch.Tensor, support_mask: torch.Tensor) -> Any:
        return self.tuned.encode_support(support, support_mask)

    def segment_encoded(self, query_enc: tuple[torch.Tensor, torch.Tensor], support: Any,
                        out_size: tuple[int, int]) -> torch.Tensor:
        return self.tuned.segment_encoded(query_enc, support, out_size)


def query_encoder(network: nn.Module) -> nn.Module | None:
    """What computes ``network``'s query encoding where that is a fixed function, so that its encodings of a frame
    may be reused by another network with the same encoder: an exported network itself, the exported graph a
    :class:`SharedQueryNetwork` runs; None for a network in PyTorch (a tuning may have changed its backbone)."""
    if isinstance(network, SharedQueryNetwork):
        return network.exported
    return network if isinstance(network, OnnxNetwork) else None


def for_tuned(tuned: nn.Module, base: nn.Module, runtime: str, image_size: int | tuple[int, int],
              clip_length: int, num_frames: int) -> nn.Module:
    """The runtime of a network tuned on one video of ``num_frames`` from ``base`` (as :func:`for_runtime` prepared
    it): sharing ``base``'s exported query graph where the backbone was not tuned (:class:`SharedQueryNetwork`),
    else exported itself where the video is long enough for an export to pay (:data:`EXPORT_PAYS_FRAMES`), else
    PyTorch. What it returns is ready to run (:func:`for_runtime` leaves it as it is)."""
    if runtime == "torch":
        return tuned
    shared = SharedQueryNetwork.of(base, tuned)
    if shared is not None:
        return shared
    if num_frames >= EXPORT_PAYS_FRAMES:
        return for_runtime(tuned, runtime, image_size, clip_length, keep=False)
    return tuned


def _grid_mask(mask: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """The support mask ``(1, K, 1, H, W)`` area-averaged onto the deep feature grid, as the pseudo mask does it
    (outside the graph: adaptive pooling to a traced size does not export)."""
    import torch.nn.functional as F

    k, (h, w) = mask.shape[1], deep.shape[-2:]
    return F.adaptive_avg_pool2d(mask.flatten(0, 1).float(), (h, w)).view(1, k, 1, h, w)


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


def for_runtime(network: nn.Module, runtime: str, image_size: int | tuple[int, int], clip_length: int = 8,
                keep: bool = True) -> nn.Module:
    """``network`` itself (``torch``) or wrapped in :class:`OnnxNetwork` (the other runtimes); the latter only on the
    CPU (on a GPU PyTorch stays), and PyTorch also stays, with a warning, where the exporter cannot express the
    network at this input size (the neck's adaptive pooling needs each pyramid level to divide the one above: 256 px
    exports, 40 px does not). ``keep=False``: a network used once (tuned on one video): exported into a temporary
    folder, not the cache, and not kept among the sessions."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (expected one of {RUNTIMES})")
    if runtime == "torch" or isinstance(network, (OnnxNetwork, SharedQueryNetwork)):
        return network
    device = next(network.parameters()).device
    if device.type != "cpu":
        logger.info("runtime %s asked for a network on %s: PyTorch runs it there", runtime, device)
        return network
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    key = fingerprint(network, size, int(clip_length))
    if not keep:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="medvos-onnx-") as folder:
            try:
                return OnnxNetwork(network, size, clip_length, key=key, backend=runtime, folder=Path(folder))
            except Exception as exc:  # noqa: BLE001 - as below
                logger.warning("runtime %s: %s cannot be exported at %s (%s); PyTorch runs it", runtime,
                               type(network).__name__, size, type(exc).__name__)
                return network
    if (key, runtime) not in _SESSIONS:  # one set per model version (the app builds a propagator per request)
        while len(_SESSIONS) >= 4:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        try:
            _SESSIONS[(key, runtime)] = OnnxNetwork(network, size, clip_length, key=key, backend=runtime)
        except Exception as exc:  # noqa: BLE001 - an architecture/size the exporter cannot express
            logger.warning("runtime %s: %s cannot be exported at %s (%s: %s); PyTorch runs it", runtime,
                           type(network).__name__, size, type(exc).__name__, str(exc).splitlines()[-1][:300])
            return network
    return _SESSIONS[(key, runtime)]


_SESSIONS: dict[tuple[str, str], OnnxNetwork] = {}
