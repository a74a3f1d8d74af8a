"""Concurrent requests of one process share one database write (group commit).

A webhook must not answer before what it accepted is committed. One transaction per request
makes the commit the limit: on Postgres each waits for its WAL flush, on SQLite for the one write
lock. Here the first request to arrive becomes the leader: it writes what every other request
queued meanwhile in one transaction, and each request returns once the commit holding its rows is
done, or raises if that commit failed. There is no thread of its own, so nothing needs starting
after gunicorn forks, and a lone request is written at once, as it would be without this.

Each waiting request sleeps on a lock of its own and is woken once: when its rows are written, or
when it is its turn to lead. (A shared condition would wake every waiter at every commit, and
each would take the GIL only to sleep again.)"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupWriteFailed(Exception):
    """The write that held these rows failed: nothing of them was committed."""


class _Entry(Generic[T]):
    __slots__ = ("done", "error", "items", "size", "wake")

    def __init__(self, items: Sequence[T]) -> None:
        self.items = items
        self.size = len(items)
        self.done = False
        self.error: BaseException | None = None
        self.wake: threading.Lock | None = None


class GroupWriter(Generic[T]):
    """`submit(items)` blocks until `write` has committed them, together with whatever other
    threads submitted at the same time (at most `max_batch` items per write, whole submissions,
    oldest first)."""

    def __init__(self, write: Callable[[list[T]], None], *, max_batch: int = 200) -> None:
        self._write = write
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[_Entry[T]] = deque()
        self._writing = False

    def submit(self, items: Sequence[T]) -> None:
        if not items:
            return
        entry: _Entry[T] = _Entry(items)
        with self._lock:
            if self._writing:
                entry.wake = threading.Lock()
                entry.wake.acquire()
                self._queue.append(entry)
            else:
                self._writing = True
        if entry.wake is not None:
            entry.wake.acquire()  # released once: written, or this entry's turn to lead
            if entry.done:
                if entry.error is not None:
                    raise GroupWriteFailed(str(entry.error)) from entry.error
                return
        self._lead(entry)

    def _lead(self, entry: _Entry[T]) -> None:
        """Write `entry` and the oldest queued submissions that fit with it, then hand over."""
        with self._lock:
            batch, count = [entry], entry.size
            while self._queue and count + self._queue[0].size <= self._max_batch:
                queued = self._queue.popleft()
                batch.append(queued)
                count += queued.size
        error: BaseException | None = None
        try:
            self._write([item for queued in batch for item in queued.items])
        except BaseException as exc:  # every waiter must hear of it, whatever it was
            error = exc
            raise
        finally:
            with self._lock:
                for queued in batch[1:]:
                    queued.done, queued.error = True, error
                    queued.wake.release()
                if self._queue:
                    self._queue.popleft().wake.release()  # the oldest waiter leads next
                else:
                    self._writing = False
