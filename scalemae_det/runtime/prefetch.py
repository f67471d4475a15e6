"""Run a generator in a reader thread, a few items ahead, so reading overlaps inference.

Exceptions raised by the generator come out of the consumer's loop; a consumer that stops early
(exception, break) stops the reader too. Memory is bounded by `depth` items in flight.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((None, exc))
            return
        finally:
            getattr(
                items, "close", lambda: None
            )()  # release what the generator holds, in this thread
        put((_DONE, None))

    thread = threading.Thread(target=reader, name="tile-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()
