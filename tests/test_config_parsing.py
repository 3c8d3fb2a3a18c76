"""The package's run-time config parses (test-time tuning's train.yaml parts, a checkpoint's network rebuilt) list
``sys.modules`` while other threads may import (a DICOM run's highdicom warm-up did, a MONAI Label server's request
threads may): a module added while the list is made must not fail them, as it fails MONAI's own locator
('dictionary changed size during iteration')."""

from __future__ import annotations

import itertools
import sys
import types
from unittest import mock

import pytest
import torch


class _Importing(str):
    """A module name whose prefix test imports a new module each time (another thread importing meanwhile)."""

    counter = itertools.count()

    def startswith(self, *args):  # noqa: D102
        sys.modules[f"medvos_test_imported_meanwhile_{next(self.counter)}"] = types.ModuleType("m")
        return False


def _importing_meanwhile():
    return mock.patch.dict(sys.modules, {_Importing("medvos_test_importing"): types.ModuleType("m")})


def _tuning_parts():
    from medvos.inference.tuning import _phase1_parts

    augment, loss = _phase1_parts.__wrapped__(32)  # the uncached parse, every component located
    assert callable(augment) and callable(loss)


def _rebuilt_network():
    from medvos.networks.checkpoint import build_network
    from medvos.networks.image_model import FewShotSegNet
    from medvos.networks.parts import part_config

    tree = part_config(FewShotSegNet.from_sizes(backbone_weights=None, channels=8))
    assert isinstance(build_network(tree), torch.nn.Module)


def test_monai_locator_fails_while_a_module_is_imported():
    """What the package guards against (if MONAI starts iterating a copy, this fails and the guard can go)."""
    from monai.bundle.config_item import ComponentLocator

    with _importing_meanwhile(), pytest.raises(RuntimeError, match="changed size during iteration"):
        ComponentLocator()._find_module_names()


@pytest.mark.parametrize("parse", [_tuning_parts, _rebuilt_network], ids=["tuning parts", "checkpoint network"])
def test_the_run_time_parses_survive_an_import_during_them(parse):
    from medvos.config_parsing import SnapshotLocator

    with _importing_meanwhile():
        names = SnapshotLocator()._find_module_names()
        before = next(_Importing.counter)
        parse()
        after = next(_Importing.counter)
    assert "monai.transforms" in names
    assert after > before + 1  # the parse listed the modules (imports happened during it) and completed
