"""What one propagation pass over a video computed that a later pass over the same frames can reuse (self-annotation's
second pass): the optical flows between frames (they depend on the frames alone) and the query encodings of a
backbone both passes share (test-time tuning leaves the backbone frozen: ``tune_backbone_lr_mult`` 0). Reused, they
give the second pass exactly the result it would compute, in less time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from medvos.inference.spill import nbytes


def _read_only(value: Any) -> None:
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, tuple):
        for v in value:
            _read_only(v)


class PassCache:
    """Results of one video's pass by key, within ``budget_mb``. :meth:`get` computes what it does not hold and keeps
    it while :attr:`storing` and there is room (in the order computed, so the earliest frames: memory stays bounded on
    a cine of any length, the later frames are computed again); kept arrays are read-only. Keys name what they hold:
    ``("flow", src, dst, ...)`` by frame index, ``("query", encoder, start, n)`` by the object that computed the
    encoding (held by the key, so it cannot be mistaken for another)."""

    def __init__(self, budget_mb: float = 256.0) -> None:
        if float(budget_mb) < 0:
            raise ValueError(f"a pass cache's budget must be >= 0 MB, got {budget_mb}")
        self.budget = int(float(budget_mb) * 2**20)
        self.used, self.hits, self.storing = 0, 0, True
        self._items: dict[Hashable, Any] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        """Whether :meth:`get` would return a kept value (not counted as a hit)."""
        return key in self._items

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value kept under ``key``, else ``compute()`` (an array, a tensor or a tuple of them; kept if storing and
        within the budget)."""
        if key in self._items:
            self.hits += 1
            return self._items[key]
        value = compute()
        size = nbytes(value)
        if self.storing and self.used + size <= self.budget:
            _read_only(value)
            self._items[key], self.used = value, self.used + size
        return value
