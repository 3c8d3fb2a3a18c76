"""MONAI's ``ConfigParser`` made safe to run while another thread imports.

MONAI's component locator lists the loaded modules by iterating ``sys.modules`` itself, which raises "dictionary
changed size during iteration" when another thread imports meanwhile (seen in 0.25.0: a DICOM run's highdicom import
during the first test-time tuning; Python's ``sys.modules`` documentation says to iterate a copy). Every parse this
package makes at run time, where other threads may be importing (the test-time tuning's ``train.yaml`` parts, a
checkpoint's network rebuilt inside a MONAI Label request), goes through :func:`config_parser`.
"""

from __future__ import annotations

import sys
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator


class SnapshotLocator(ComponentLocator):
    """MONAI's component locator, listing ``sys.modules`` from a copy."""

    def _find_module_names(self) -> list[str]:
        return [m for m in sys.modules.copy() if m.startswith(self.MOD_START)
                and all(s not in m for s in self.excludes)]


def config_parser(config: Any = None) -> ConfigParser:
    """A ``ConfigParser`` of ``config`` whose components are located with :class:`SnapshotLocator` (set before any
    parse, which hands the parser's locator to every component)."""
    parser = ConfigParser(config)
    parser.locator = SnapshotLocator()
    return parser
