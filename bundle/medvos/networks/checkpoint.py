"""Checkpoints that carry their own architecture (:class:`ModelSpec`), loaded safely
(``torch.load(weights_only=True)``, finite weights) with clear errors.

A checkpoint is a plain state dict (older files) or ``{"model": state, "spec": spec}``: ``spec`` says how to
rebuild the network (its ``_target_`` config tree, :mod:`medvos.networks.parts`) and how to feed it (input size,
intensity and colour handling), what it was trained on and with which medvos version. :func:`load_model` rebuilds
the network from the file alone; the specs of 0.3.0-0.6.0 (format 1: image-model and TAU arguments) are read too.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvos.networks.backbone import weights_from_checkpoint
from medvos.networks.parts import TARGET, part_config


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not fit the network."""


SHIPPED_MODEL = "general.pt"  # the general model shipped in bundle/models/ (see the model card)
SHIPPED_PATH = Path(__file__).resolve().parents[2] / "models" / SHIPPED_MODEL  # its file, every script's default
INTENSITY = "8-bit data /255; otherwise the cine's 0.5-99.5 percentile window (medvos.data.transforms)"
COLOUR = "RGB in [0, 1]; grey repeated to 3 channels"


class ModelSpec:
    """The facts saved next to the weights (``"spec"`` entry): an object with ``state_dict``, so MONAI's
    ``CheckpointSaver`` stores it beside the model.

    Args:
        network: the network the weights belong to (saved as its ``_target_`` config tree, weights files left out)
            or that tree itself.
        image_size: the network input size the model was trained at.
        training: a summary of the training data and run (see :func:`medvos.data.datalist.summarise`).
    """

    def __init__(self, network: nn.Module | dict[str, Any], image_size: int | Sequence[int],
                 training: dict[str, Any] | None = None) -> None:
        from medvos import __version__

        size = [int(image_size)] * 2 if isinstance(image_size, int) else [int(v) for v in image_size]
        self.spec: dict[str, Any] = {
            "format": SPEC_FORMAT, "medvos_version": __version__,
            "network": dict(network) if isinstance(network, dict) else part_config(network),
            "preprocessing": {"image_size": size, "intensity": INTENSITY, "colour": COLOUR},
            "training": dict(training or {}),
        }

    def state_dict(self) -> dict[str, Any]:
        return self.spec

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spec = dict(state)


SPEC_FORMAT = 2  # 1 (0.3.0-0.6.0): "network" held FewShotSegNet.from_sizes arguments and "relearn" the TAU's


def legacy_network_config(network: dict[str, Any], relearn: dict[str, Any] | None) -> dict[str, Any]:
    """The config tree of a format-1 spec (image-model arguments, TAU arguments of a relearned model)."""
    return copy.deepcopy(_legacy_network_config(json.dumps(network, sort_keys=True), json.dumps(relearn)))


@lru_cache(maxsize=8)
def _legacy_network_config(network: str, relearn: str) -> dict[str, Any]:
    """(Built once per spec, on the meta device: no memory, no weights.)"""
    from medvos.networks.image_model import FewShotSegNet
    from medvos.networks.relearn_model import RelearnNet

    network, relearn = json.loads(network), json.loads(relearn)
    with torch.device("meta"), weights_from_checkpoint():
        net = FewShotSegNet.from_sizes(backbone_weights=None, **network)
        if relearn:
            net = RelearnNet.from_sizes(net, **{"clip_length" if k == "window" else k: v for k, v in relearn.items()})
    return part_config(net)


NETWORK_MODULES = "medvos.networks."  # the only modules a saved network config may name


def build_network(config: dict[str, Any], source: str | Path = "network config") -> nn.Module:
    """The network a saved ``_target_`` config tree describes, built with MONAI's ``ConfigParser`` (safe while another
    thread imports: :func:`medvos.config_parsing.config_parser`), untrained.

    A checkpoint is data, never code: the tree may only name classes of :mod:`medvos.networks`, and holds no
    expressions, references or other special keys.
    """
    from medvos.config_parsing import config_parser
    from medvos.networks.image_model import FewShotModel

    def check(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.startswith("_") and key != TARGET:
                    raise CheckpointError(f"{source}: network config key {where}{key!r}: only '{TARGET}' may be "
                                          "special")
                if key == TARGET and not (isinstance(value, str) and value.startswith(NETWORK_MODULES)):
                    raise CheckpointError(f"{source}: network config {where or 'root'} names {value!r}, not a "
                                          f"class of {NETWORK_MODULES.rstrip('.')}")
                check(value, f"{where}{key}.")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                check(value, f"{where}{i}.")
        elif isinstance(node, str) and node[:1] in ("$", "@", "%"):
            raise CheckpointError(f"{source}: network config value {where.rstrip('.')}={node!r} is an expression "
                                  "or reference; a saved network config holds plain values only")

    if not isinstance(config, dict) or TARGET not in config:
        raise CheckpointError(f"{source}: the network config is not a '{TARGET}' tree: {str(config)[:200]}")
    check(config, "")
    try:
        with weights_from_checkpoint():
            network = config_parser({"network": config}).get_parsed_content("network")
    except Exception as exc:  # noqa: BLE001 - whatever the parts raise, name the file
        cause = exc
        while cause.__cause__ is not None:  # MONAI's "Failed to instantiate" wraps what the part said
            cause = cause.__cause__
        raise CheckpointError(f"{source}: its network config cannot be built ({type(cause).__name__}: "
                              f"{str(cause)[:500]})") from exc
    if not isinstance(network, FewShotModel):
        raise CheckpointError(f"{source}: its network config builds a {type(network).__name__}, not a medvos model")
    return network


FINGERPRINT_SUFFIX = ".sha256"  # sidecar written by the training savers: ``<checkpoint>.sha256`` holds its sha256


def recorded_sha256(path: str | Path) -> tuple[str, str] | None:
    """``(sha256, where it is recorded)`` for a checkpoint: the shipped model's in ``metadata.json``, any other
    file's in its ``<file>.sha256`` sidecar; None when nothing records it."""
    path = Path(path).resolve()
    if path == SHIPPED_PATH:
        import json

        meta = SHIPPED_PATH.parents[1] / "configs" / "metadata.json"
        entry = json.loads(meta.read_text()).get("shipped_model", {})
        return (entry["sha256"], str(meta)) if entry.get("sha256") else None
    sidecar = path.with_name(path.name + FINGERPRINT_SUFFIX)
    if sidecar.is_file():
        return sidecar.read_text().split()[0].strip(), str(sidecar)
    return None


def write_fingerprint(path: str | Path) -> Path:
    """Record a checkpoint's sha256 in its ``<file>.sha256`` sidecar (atomically)."""
    from medvos.io.atomic import atomic_write_bytes
    from medvos.io.result_set import sha256_file

    path = Path(path)
    return atomic_write_bytes(path.with_name(path.name + FINGERPRINT_SUFFIX),
                              f"{sha256_file(path)}  {path.name}\n".encode())


@lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> Any:
    """One ``torch.load`` per file version, after its sha256 is checked against the recorded one (a flipped byte in
    a tensor loads silently otherwise): a workflow asks a checkpoint for its spec, input size, clip length and
    weights, and each would otherwise read the file again (callers copy before changing anything)."""
    recorded = recorded_sha256(path)
    if recorded is not None:
        from medvos.io.result_set import sha256_file

        actual = sha256_file(path)
        if actual != recorded[0]:
            raise CheckpointError(f"{path}: sha256 {actual[:16]}... differs from the {recorded[0][:16]}... recorded in "
                                  f"{recorded[1]}: the file is corrupt or was changed")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_state(path: str | Path) -> dict[str, Any]:
    """The state dict of a checkpoint (a plain state dict, or ``{"model": state}`` as written by CheckpointSaver)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    st = path.stat()
    try:
        obj = _read(str(path.resolve()), st.st_mtime_ns, st.st_size)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint, corrupt or truncated ({type(exc).__name__}: "
                              f"{exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: checkpoint holds {type(obj).__name__}, expected a state dict")
    return obj


_OLD_SE = re.compile(r"^(.*\.attn\.attn\.se\.)([02]\.(?:weight|bias))$")


def renamed(key: str) -> str:
    """A weight's name in this version: TAU's squeeze-excitation is MONAI's ``ChannelSELayer`` since 0.6.0
    (``...se.0.weight`` -> ``...se.fc.0.weight``), so relearned files of earlier versions still load."""
    return _OLD_SE.sub(r"\1fc.\2", key)


def model_state(path: str | Path) -> dict[str, Any]:
    """The network weights of a checkpoint: a plain state dict, or its ``"model"`` entry (resume checkpoints).
    Raises :class:`CheckpointError` if a weight is not finite."""
    state = load_state(path)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = {renamed(k.removeprefix("module.")): v for k, v in state.items()}
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite weights (NaN or inf) in {len(bad)} tensor(s), e.g. {bad[:3]}; "
                              "the training that wrote it diverged")
    return state


def checkpoint_spec(path: str | Path) -> dict[str, Any] | None:
    """The :class:`ModelSpec` saved in a checkpoint (a format-1 spec read as this format), or None for a plain
    state dict (older files)."""
    state = load_state(path)
    spec = state.get("spec") if "model" in state else None
    if not isinstance(spec, dict):
        return None
    spec = dict(spec)
    if not isinstance(spec.get("format", 1), int) or spec.get("format", 1) > SPEC_FORMAT:
        raise CheckpointError(f"{path}: spec format {spec.get('format')!r} (medvos {spec.get('medvos_version')}) is "
                              f"newer than this medvos reads ({SPEC_FORMAT}): update medvos")
    if spec.get("format", 1) == 1:
        try:
            spec["network"] = legacy_network_config(spec.get("network") or {}, spec.pop("relearn", None))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: its network spec {spec.get('network')} cannot be built ({exc})") from exc
        spec["format"] = SPEC_FORMAT
    return spec


def checkpoint_clip_length(path: str | Path, default: int = 8) -> int:
    """The TAU clip length |B| of a relearned checkpoint with a spec; ``default`` otherwise (any clip length works
    for a phase-1 model)."""
    tau = ((checkpoint_spec(path) or {}).get("network") or {}).get("tau")
    return int(tau["frames"]) if isinstance(tau, dict) and "frames" in tau else default


def input_size(path: str | Path, default: int | Sequence[int] = 256) -> list[int]:
    """The network input size ``[h, w]`` a checkpoint was trained at (``default`` for files without a spec)."""
    spec = checkpoint_spec(path)
    if spec and spec.get("preprocessing", {}).get("image_size"):
        return [int(v) for v in spec["preprocessing"]["image_size"]]
    return [int(default)] * 2 if isinstance(default, int) else [int(v) for v in default]


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


def load_model(path: str | Path, image_model: nn.Module | None = None, clip_length: int | None = None,
               tau_hidden: int | None = None, tau_blocks: int | None = None) -> nn.Module:
    """A phase-1 or phase-2 checkpoint into the right network.

    A checkpoint with a spec is rebuilt from the file alone (the other arguments are ignored); an older plain state
    dict is loaded into ``image_model`` (default: a default :class:`FewShotSegNet`) and, if it holds TAU weights,
    a :class:`RelearnNet` around it with ``clip_length``, ``tau_hidden``, ``tau_blocks`` (default: the TAU's own,
    :data:`medvos.networks.relearn_model.CLIP_LENGTH` and so on).
    """
    spec = checkpoint_spec(path)
    if spec is not None:
        return load_weights(build_network(spec["network"], path), path)
    from medvos.networks.image_model import FewShotSegNet

    if image_model is None:
        with weights_from_checkpoint():
            image_model = FewShotSegNet.from_sizes(backbone_weights=None)
    if is_relearned(path):
        from medvos.networks.relearn_model import CLIP_LENGTH, TAU_BLOCKS, TAU_HIDDEN, RelearnNet

        return load_weights(RelearnNet.from_sizes(image_model, clip_length or CLIP_LENGTH, tau_hidden or TAU_HIDDEN,
                                                  tau_blocks or TAU_BLOCKS), path)
    return load_weights(image_model, path)
