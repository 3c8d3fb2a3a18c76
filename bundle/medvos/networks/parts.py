"""Network parts that can be written back as the MONAI ``_target_`` config they were built from.

Every part of the few-shot model (backbone, pseudo mask, fusion, neck, head, TAU) and the two models composed of
them are :class:`Part` modules: each remembers its constructor arguments, so :func:`part_config` writes any built
network as a tree of ``{"_target_": ..., argument: value}`` dicts, the same tree ``train.yaml``'s ``network_def``
spells out. Checkpoints carry that tree (:class:`~medvos.networks.checkpoint.ModelSpec`) and
:func:`~medvos.networks.checkpoint.load_model` builds it back with MONAI's ``ConfigParser``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

TARGET = "_target_"


class Part(nn.Module):
    """An ``nn.Module`` that records the arguments it was built with (as plain config data, at construction)."""

    #: constructor arguments written as None: weights files (the checkpoint carries the trained weights)
    not_recorded: ClassVar[tuple[str, ...]] = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Part:
        self = super().__new__(cls)
        if args or kwargs or not _required(cls):  # (copy.deepcopy calls __new__ bare and restores __dict__ itself)
            bound = inspect.signature(cls.__init__).bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(list(bound.arguments.items())[1:])
            object.__setattr__(self, "_config", {TARGET: f"{cls.__module__}.{cls.__qualname__}", **{
                k: None if k in cls.not_recorded else _as_config(v, f"{cls.__qualname__}({k}=...)")
                for k, v in arguments.items()}})
        return self


def _required(cls: type) -> bool:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


class _NotConfig:
    """Stands in for an argument that has no config form; :func:`part_config` refuses it by name."""

    def __init__(self, where: str, value: Any) -> None:
        self.where, self.kind = where, type(value).__name__


def _as_config(value: Any, where: str) -> Any:
    if isinstance(value, Part):
        return part_config(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_as_config(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _as_config(v, where) for k, v in value.items()}
    return _NotConfig(where, value)


def part_config(network: nn.Module) -> dict[str, Any]:
    """The ``_target_`` config tree a network was built from (``DistributedDataParallel`` unwrapped).

    Raises:
        TypeError: ``network`` is not a :class:`Part`, or one of its arguments has no config form.
    """
    network = getattr(network, "module", network)
    config = getattr(network, "_config", None)
    if not isinstance(network, Part) or config is None:
        raise TypeError(f"{type(network).__name__} is not a medvos network part: it cannot be saved as a config")

    def check(node: Any) -> Any:
        if isinstance(node, _NotConfig):
            raise TypeError(f"{node.where}: a {node.kind} argument cannot be saved in a network config")
        if isinstance(node, dict):
            return {k: check(v) for k, v in node.items()}
        if isinstance(node, list):
            return [check(v) for v in node]
        return node

    return check(config)
