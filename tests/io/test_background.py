"""Decoding ahead and writing behind (issue 16, item 2): order kept, errors raised in the caller, no thread left."""

from __future__ import annotations

import threading
import time

import pytest

from medvos.io.background import BackgroundWriter, prefetch


def test_prefetch_keeps_order_and_runs_ahead():
    produced = []

    def items():
        for i in range(6):
            produced.append(i)
            yield i

    it = prefetch(items(), depth=2)
    assert next(it) == 0
    time.sleep(0.2)
    assert len(produced) >= 3  # the producer ran ahead of the consumer, bounded by the depth
    assert list(it) == [1, 2, 3, 4, 5]


def test_prefetch_raises_the_producers_error_and_stops_when_left():
    def failing():
        yield 1
        raise ValueError("frame 2: NaN")

    with pytest.raises(ValueError, match="NaN"):
        list(prefetch(failing()))
    before = threading.active_count()
    it = prefetch(iter(range(10**6)), depth=2)
    next(it)
    it.close()  # the consumer leaves early (an error downstream)
    time.sleep(0.3)
    assert threading.active_count() <= before


def test_background_writer_keeps_order_and_raises_errors():
    done = []
    with BackgroundWriter() as bw:
        for i in range(5):
            bw.submit(done.append, i)
    assert done == [0, 1, 2, 3, 4]

    def full_disk(_):  # noqa: ANN001, ANN202
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"), BackgroundWriter() as bw:
        bw.submit(full_disk, 0)
        time.sleep(0.1)
        bw.submit(done.append, 99)  # raised here at the latest, and never written
    assert 99 not in done
