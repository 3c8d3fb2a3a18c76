"""A last-in-first-out stack that holds its newest records in memory up to a budget and its older ones in an anonymous
temporary file: what a backward pass needs to wait on (every frame since the last annotated frame, then their results
in frame order) stays bounded in memory on a cine of any length, and comes back exactly as it went in.
"""

from __future__ import annotations

import pickle
import tempfile
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import torch


def nbytes(value: Any) -> int:
    """The bytes of the arrays and tensors ``value`` holds (in tuples, lists, dicts and objects' attributes)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.numel()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if hasattr(value, "__dict__"):
        return nbytes(vars(value))
    return 0


class SpillStack:
    """Records pushed and popped newest first. While the records in memory exceed ``budget_mb`` the oldest of them is
    pickled to the end of a temporary file (so the file holds the oldest records, in order, and a pop reads its last
    one and shrinks it); the file is made on the first spill and deleted by :meth:`close` or when collected.
    :attr:`spilled` counts the records that went to the file."""

    def __init__(self, budget_mb: float = 64.0) -> None:
        if float(budget_mb) < 0:
            raise ValueError(f"a spill stack's memory budget must be >= 0 MB, got {budget_mb}")
        self.budget = int(float(budget_mb) * 2**20)
        self.spilled = 0
        self._memory: deque[tuple[Any, int]] = deque()  # (record, bytes), newest on the right
        self._memory_bytes = 0
        self._file: IO[bytes] | None = None
        self._offsets: list[int] = []  # where each record in the file starts

    def __len__(self) -> int:
        return len(self._memory) + len(self._offsets)

    def push(self, record: Any) -> None:
        size = nbytes(record)
        self._memory.append((record, size))
        self._memory_bytes += size
        while self._memory_bytes > self.budget and self._memory:
            oldest, size = self._memory.popleft()
            self._memory_bytes -= size
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="medvos-spill-")
            self._file.seek(0, 2)
            self._offsets.append(self._file.tell())
            pickle.dump(oldest, self._file, protocol=pickle.HIGHEST_PROTOCOL)
            self.spilled += 1

    def pop(self) -> Any:
        """The newest record (from memory, else the file's last)."""
        if self._memory:
            record, size = self._memory.pop()
            self._memory_bytes -= size
            return record
        if not self._offsets:
            raise IndexError("pop from an empty SpillStack")
        assert self._file is not None
        offset = self._offsets.pop()
        self._file.seek(offset)
        record = pickle.load(self._file)
        self._file.truncate(offset)
        return record

    def drain(self) -> Iterator[Any]:
        """Pop every record, newest first (the file is closed once empty)."""
        while len(self):
            yield self.pop()
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory.clear()
        self._offsets.clear()
        self._memory_bytes = 0

    def __del__(self) -> None:
        if hasattr(self, "_offsets"):  # (not if __init__ refused its budget)
            self.close()
