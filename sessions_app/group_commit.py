"""Concurrent requests of one process share one database write (group commit).

A webhook must not answer before what it accepted is committed. One transaction per request
makes the commit the limit: on Postgres each waits for its WAL flush, on SQLite for the one write
lock. Here the first request to arrive becomes the leader: it writes what every other request
queued meanwhile in one transaction, and each request returns once the commit holding its rows is
done, or raises if that commit failed. There is no thread of its own, so nothing needs starting
after gunicorn forks, and a lone request is written at once, as it would be without this."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupWriteFailed(Exception):
    """The write that held these rows failed: nothing of them was committed."""


@dataclass(eq=False)
class _Entry(Generic[T]):
    items: Sequence[T]
    done: bool = False
    error: BaseException | None = None
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.items)


class GroupWriter(Generic[T]):
    """`submit(items)` blocks until `write` has committed them, together with whatever other
    threads submitted at the same time (at most `max_batch` items per write, whole submissions)."""

    def __init__(self, write: Callable[[list[T]], None], *, max_batch: int = 200) -> None:
        self._write = write
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Entry[T]] = []
        self._writing = False

    def submit(self, items: Sequence[T]) -> None:
        if not items:
            return
        entry = _Entry(items)
        with self._cond:
            self._queue.append(entry)
        while True:
            with self._cond:
                while self._writing and not entry.done:
                    self._cond.wait()
                if entry.done:
                    if entry.error is not None:
                        raise GroupWriteFailed(str(entry.error)) from entry.error
                    return
                self._writing = True
                batch = self._take()
            error: BaseException | None = None
            try:
                self._write([item for queued in batch for item in queued.items])
            except BaseException as exc:  # every waiter must hear of it, whatever it was
                error = exc
            with self._cond:
                self._writing = False
                for queued in batch:
                    queued.done = True
                    queued.error = error
                self._cond.notify_all()
            # A long queue may not have reached this request's own rows yet: lead again.
            if entry.done:
                if error is not None:
                    raise error
                return

    def _take(self) -> list[_Entry[T]]:
        """The oldest submissions that fit in one write (always at least one)."""
        batch, count = [], 0
        while self._queue and (not batch or count + self._queue[0].size <= self._max_batch):
            entry = self._queue.pop(0)
            batch.append(entry)
            count += entry.size
        return batch
