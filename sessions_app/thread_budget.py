"""The web process's request threads, and the long polls that give one back when all are taken.

gunicorn's gthread worker runs each request on one of `GUNICORN_THREADS` threads and queues the
rest. A waiting `/messages` holds its thread for up to 25 s, so enough pull clients waiting at
once would leave LINE's webhooks queued behind them past LINE's 2-second deadline.
`BusyThreadsMiddleware` counts the requests in progress; while that count reaches the number of
threads, the longest waiting poll answers "nothing yet" (which its client follows with a new
poll), at most once every `GIVE_WAY_INTERVAL`: a queued request waits for a thread about that
long at most, and clients are not made to spin."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.http import HttpRequest, HttpResponse

# Seconds between two polls giving way in one process: a bound on a queued webhook's wait for a
# thread, and on how often a pull client is asked to poll again.
GIVE_WAY_INTERVAL = 0.5


class ThreadBudget:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.busy = 0
        self._waiting: list[object] = []  # the waiting polls, longest waiting first
        self._last_give_way = 0.0

    def enter(self) -> None:
        with self._lock:
            self.busy += 1

    def leave(self) -> None:
        with self._lock:
            self.busy -= 1

    @contextmanager
    def waiting_poll(self) -> Iterator[Callable[[], bool]]:
        """Register a waiting poll; yields `should_give_way()`, true once for the longest waiting
        poll while every thread is taken."""
        token = object()
        with self._lock:
            self._waiting.append(token)

        def should_give_way() -> bool:
            with self._lock:
                now = time.monotonic()
                if (
                    self.busy < settings.GUNICORN_THREADS
                    or self._waiting[0] is not token
                    or now - self._last_give_way < GIVE_WAY_INTERVAL
                ):
                    return False
                self._last_give_way = now
                return True

        try:
            yield should_give_way
        finally:
            with self._lock:
                self._waiting.remove(token)


budget = ThreadBudget()


class BusyThreadsMiddleware:
    """First in MIDDLEWARE: counts every request in progress, the vendors' webhooks included."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        budget.enter()
        try:
            return self.get_response(request)
        finally:
            budget.leave()
