"""A run's outputs as one result set: written into a staging folder, moved into place together, with a manifest.

While a run writes, nothing appears under a final name: every output goes to ``<output_dir>/.medvos-staging-<pid>-
<token>/``. At the end the old set's ``manifest.json`` is removed first (an interrupted move then leaves a folder with
no manifest, which says the set is incomplete), every output is renamed into place (a folder such as ``masks/``
replaces the old one whole, so old and new PNGs never mix), files listed by the old manifest that this run did not
produce are removed, and ``manifest.json`` (files with sha256 and size, input, checkpoint, version) is renamed in
last. A failed or killed run leaves only its staging folder, which the next run into that folder removes together
with stale temporary files of earlier runs.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from medvos import __version__
from medvos.io.atomic import atomic_write_bytes

MANIFEST = "manifest.json"
STAGING_PREFIX = ".medvos-staging-"
FORMAT = "medvos-result-set/1"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(output_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """Remove staging folders of runs that no longer run and hidden temporary files (``.<name>.*.tmp*``, left by
    a killed writer) of the given output names, in ``output_dir`` and its ``masks/``; returns what was removed."""
    removed: list[Path] = []
    if not output_dir.is_dir():
        return removed
    for entry in output_dir.iterdir():
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir():
            pid = entry.name[len(STAGING_PREFIX):].split("-")[0]
            if not pid.isdigit() or not _alive(int(pid)) or int(pid) == os.getpid():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    for folder in (output_dir, output_dir / "masks"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_file() and entry.name.startswith(".") and ".tmp" in entry.name and (
                    folder.name == "masks" or any(entry.name.startswith(f".{n}.") for n in names)):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed.append(entry)
    return removed


def read_manifest(output_dir: str | Path) -> dict[str, Any] | None:
    """The result set's manifest, or None when there is none (no complete set in that folder)."""
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def verify(output_dir: str | Path) -> list[str]:
    """Problems of the result set in ``output_dir`` (missing manifest, missing or changed files); empty when whole."""
    output_dir = Path(output_dir)
    manifest = read_manifest(output_dir)
    if manifest is None:
        return [f"{output_dir / MANIFEST}: missing or unreadable: the result set is incomplete"]
    problems = []
    for rel, info in manifest.get("files", {}).items():
        f = output_dir / rel
        if not f.is_file():
            problems.append(f"{f}: listed in the manifest but missing")
        elif f.stat().st_size != info["bytes"] or sha256_file(f) != info["sha256"]:
            problems.append(f"{f}: differs from the manifest (sha256)")
    return problems


class ResultSet:
    """``with ResultSet(output_dir, names, provenance) as rs: write to rs.path("mask.nii.gz") ...``; the outputs
    are moved into ``output_dir`` with a manifest only when the block ends without an error.

    Args:
        names: the top-level outputs this run may write (files, or folders such as ``masks``).
        provenance: what the manifest records beside the files (input, checkpoint, options).
    """

    def __init__(self, output_dir: str | Path, names: tuple[str, ...], provenance: dict[str, Any]) -> None:
        self.output_dir = Path(output_dir)
        self.names = names
        self.provenance = provenance
        self.staging = self.output_dir / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"

    def __enter__(self) -> ResultSet:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale(self.output_dir, (*self.names, MANIFEST))
        self.staging.mkdir()
        return self

    def path(self, name: str) -> Path:
        """Where to write output ``name`` during the run (inside the staging folder)."""
        if name not in self.names:
            raise ValueError(f"{name!r} is not one of this result set's outputs {self.names}")
        return self.staging / name

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        try:
            self._commit()
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _commit(self) -> None:
        written = sorted(p for p in self.staging.rglob("*") if p.is_file())
        files = {p.relative_to(self.staging).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in written}
        manifest = {"format": FORMAT, "medvos_version": __version__, "complete": True,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    **self.provenance, "files": files}
        old = read_manifest(self.output_dir)
        with contextlib.suppress(FileNotFoundError):
            (self.output_dir / MANIFEST).unlink()  # from here until the end the folder holds no complete set
        aside = self.staging / ".replaced"
        aside.mkdir()
        for entry in sorted(self.staging.iterdir()):
            if entry == aside:
                continue
            target = self.output_dir / entry.name
            if target.is_dir() and not target.is_symlink():
                os.replace(target, aside / entry.name)  # a folder is replaced whole: no old files left in it
            os.replace(entry, target)
        new_tops = {rel.split("/")[0] for rel in files}
        for rel in (old or {}).get("files", {}):
            if rel.split("/")[0] not in new_tops:  # an output of the old set that this run did not write
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    (self.output_dir / rel).unlink()
        atomic_write_bytes(self.output_dir / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
