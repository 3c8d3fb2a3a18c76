"""Optical flows computed ahead, in one background thread, while the caller fuses the frames before them.

Motion-aware propagation needs, per frame, flows that depend on grey frames alone (the previous frame's or the
annotated frame's to this one), not on any result: they can be computed as soon as both frames are decoded. On two
cores the propagation loop fused one frame, then waited for its flows (half its time); with the flows requested as the
frames arrive, a worker computes them while the loop fuses, and the network's thread fills the rest. OpenCV's DIS
releases the GIL. Every flow is computed by the worker (a DIS object is not safe to share between threads), with the
same calls in the same inputs: the same flows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

FlowPair = tuple[np.ndarray, np.ndarray]
"""A flow ``(H,W,2)`` and its forward-backward error ``(H,W)``."""


class FlowsAhead:
    """Flows between frames by index, computed in one background thread by ``compute(src_grey, dst_grey)``.

    :meth:`request` queues one (once per ``(src, dst)`` pair until it is taken); :meth:`take` returns it, queueing it
    first if nobody did, and forgets it (each flow is taken once; a caller that needs it again keeps it, as
    :class:`medvos.inference.reuse.PassCache` does). Memory: the flows requested and not yet taken. :meth:`close` drops
    what is still queued (a stream left early) and ends the thread.
    """

    def __init__(self, compute: Callable[[np.ndarray, np.ndarray], FlowPair]) -> None:
        self._compute = compute
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="medvos-flow")
        self._queued: dict[tuple[int, int], Future] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __len__(self) -> int:
        return len(self._queued)

    def request(self, s: int, d: int, src: np.ndarray, dst: np.ndarray) -> None:
        """Start computing the flow from frame ``s`` (grey ``src``) to frame ``d`` (grey ``dst``); after
        :meth:`close` (a producer thread still running), nothing."""
        with self._lock:
            if self._closed:
                return
            if (s, d) not in self._queued:
                self._queued[(s, d)] = self._pool.submit(self._compute, src, dst)

    def take(self, s: int, d: int, src: np.ndarray, dst: np.ndarray) -> FlowPair:
        """The flow from frame ``s`` to frame ``d`` (waiting for it; computed now if it was not requested)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("a flow was taken after the propagation that computes them ended")
            future = self._queued.pop((s, d), None) or self._pool.submit(self._compute, src, dst)
        return future.result()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queued.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FlowsAhead:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
