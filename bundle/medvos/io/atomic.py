"""Write-to-temporary-then-rename, so a crash never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it.

    The temporary name keeps the final suffix (or ``suffix``) so writers that dispatch on the file
    extension (nibabel, OpenCV, imageio) pick the right format. The final file's mode follows the umask, as a
    plainly created file's would (temporary files are created 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    ext = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{ext}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def finish(ctx: contextlib.AbstractContextManager, close: Callable[[], None], error: BaseException | None) -> None:
    """Close a writer, then leave its :func:`atomic_path` context: renamed only if nothing failed.

    ``error`` is the exception that ended the writing (or None). A failure of ``close`` itself (a full disk when
    the last buffer is flushed) also discards the temporary file, and is raised unless ``error`` is raised anyway.
    """
    try:
        close()
    except BaseException as exc:  # noqa: BLE001 - re-raised below
        error = error or exc
        closing_failed = exc
    else:
        closing_failed = None
    ctx.__exit__(type(error) if error else None, error, error.__traceback__ if error else None)
    if closing_failed is not None and error is closing_failed:
        raise closing_failed
