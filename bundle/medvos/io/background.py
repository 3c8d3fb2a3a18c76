"""Decoding ahead and writing behind, in background threads, so that neither stalls the propagation loop.

Decoders (Pillow, libjpeg, pydicom's numpy paths), zlib, OpenCV's encoders and ONNX Runtime release the GIL, so on
two cores reading window k+1 and writing window k-1 overlap the network's work on window k. Order is kept, memory
is bounded (a few windows in flight) and an error in a thread is raised in the caller.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2, stats: dict[str, float] | None = None,
             label: str = "prefetch") -> Iterator[T]:
    """Iterate ``items`` produced by a background thread up to ``depth`` ahead of the consumer; the producer's
    exception is raised here; leaving the loop early stops the producer. ``stats[label]`` accumulates the seconds
    the producer spent producing."""
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            iterator = iter(items)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                finally:
                    if stats is not None:
                        stats[label] = stats.get(label, 0.0) + time.perf_counter() - t0
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            buffer.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="medvos-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = buffer.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full buffer, then let it end
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(0.05)


class BackgroundWriter:
    """Runs submitted write calls in order in one background thread (at most ``depth`` waiting).

    ``with BackgroundWriter() as bw: bw.submit(writer.append, labels)``. The first error stops further writes and is
    raised by the next :meth:`submit` or at the end of the block; leaving the block waits for every write.
    """

    def __init__(self, depth: int = 2, stats: dict[str, float] | None = None) -> None:
        self.stats = stats  # seconds per submitted call's label (its function's name unless given)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="medvos-writer", daemon=True)

    def __enter__(self) -> BackgroundWriter:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _DONE:
                return
            if self._error is None:
                fn, label, args, kwargs = job
                t0 = time.perf_counter()
                try:
                    fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller
                    self._error = exc
                if self.stats is not None:
                    self.stats[label] = self.stats.get(label, 0.0) + time.perf_counter() - t0

    def submit(self, fn: Callable[..., Any], *args: Any, label: str | None = None, **kwargs: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((fn, label or getattr(fn, "__qualname__", "write"), args, kwargs))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if exc is None and self._error is not None:
            raise self._error
