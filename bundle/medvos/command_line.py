"""The real cause of a failed bundle command, as its last line.

``python -m monai.bundle run ...`` wraps an exception raised inside a config expression in several "Failed to
evaluate ConfigExpression" layers; the user's problem (which file, what is wrong with it) ends up buried in the
middle of the traceback. Importing :mod:`medvos` from that command line installs :func:`excepthook`, which prints
the usual traceback and then the root cause as the final line.
"""

from __future__ import annotations

import sys
from types import TracebackType

PREFIX = "medvos: error: "


def root_cause(exc: BaseException) -> BaseException:
    """The first medvos error in ``exc``'s cause/context chain, else the innermost exception."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for e in chain:
        if type(e).__module__.startswith("medvos."):
            return e
    return chain[-1]


def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """Print the traceback as usual, then ``medvos: error: <ExceptionType>: <message>`` as the last line."""
    sys.__excepthook__(kind, exc, tb)
    if isinstance(exc, KeyboardInterrupt):
        return
    cause = root_cause(exc)
    sys.stderr.write(f"{PREFIX}{type(cause).__name__}: {cause}\n")
    sys.stderr.flush()


def install_for_bundle_command() -> None:
    """Install :func:`excepthook` when this process is the ``monai.bundle`` command line (only then)."""
    if sys.argv and sys.argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py"):
        sys.excepthook = excepthook
