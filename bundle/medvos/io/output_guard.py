"""Outputs never overwrite inputs: the paths a run will write are checked against the files it reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from medvos.io.errors import OutputConflictError


def input_files(*sources: str | Path | Sequence[str | Path] | None) -> set[Path]:
    """Every file behind the given sources (a file, a folder of frames or masks, or a list of files), resolved."""
    out: set[Path] = set()
    for source in sources:
        if source is None:
            continue
        for item in [source] if isinstance(source, (str, Path)) else source:
            p = Path(item).resolve()
            out |= {f.resolve() for f in p.rglob("*") if f.is_file()} if p.is_dir() else {p}
    return out


def check_outputs(planned_files: Iterable[str | Path], planned_folders: Iterable[str | Path], inputs: set[Path],
                  overwrite: bool = False) -> None:
    """Raise :class:`OutputConflictError` naming the input if a planned file is an input, or a planned output folder
    (whose files are replaced) holds one. ``overwrite`` allows it."""
    if overwrite:
        return
    for f in planned_files:
        path = Path(f).resolve()
        if path in inputs:
            raise OutputConflictError(path, "is an input of this run and would be overwritten by an output; choose "
                                      "another output folder (or pass --overwrite True)")
    for d in planned_folders:
        folder = Path(d).resolve()
        inside = sorted(p for p in inputs if folder in p.parents)
        if inside:
            raise OutputConflictError(inside[0], f"is an input of this run inside the output folder {folder}, whose "
                                      "files would be replaced; choose another output folder (or pass --overwrite "
                                      "True)")
