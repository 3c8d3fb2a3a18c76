"""Errors raised for bad input: each names the offending file and the problem."""

from __future__ import annotations

from pathlib import Path


class CineReadError(ValueError):
    """A cine, image or mask could not be read. ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path | list, problem: str) -> None:
        self.path = str(path[0] if isinstance(path, (list, tuple)) and path else path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatalistError(CineReadError):
    """A datalist or dataset folder is missing, unreadable or lacks what is asked of it (a split, an entry's image,
    an expected folder). A :class:`CineReadError` too, so every bad-input handler reports it the same way."""


class MaskMismatchError(CineReadError):
    """A mask does not fit its video (frame count, size) or carries no usable annotation."""


class OutputConflictError(CineReadError):
    """An output would overwrite an input (the cine, its annotation or ground truth)."""
