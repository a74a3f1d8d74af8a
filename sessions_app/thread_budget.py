"""The web process's request threads, and the long polls that give one back when all are taken.

gunicorn's gthread worker runs each request on one of its `threads` and queues the rest, first in
first out. A waiting `/messages` holds its thread for up to 25 s, so as many pull clients waiting
at once as there are threads would leave LINE's webhooks queued behind them past LINE's 2-second
deadline. `BusyThreadsMiddleware` counts the requests in progress; while that count reaches the
number of threads, the longest waiting poll answers "nothing yet" (its client then polls again),
at most one every `GIVE_WAY_INTERVAL` per process, so that clients are not made to spin. A queued
webhook therefore waits about one interval for each request queued ahead of it, mostly other
clients' new polls: with a few more pull clients than threads it is answered within LINE's 2 s;
with many more, only more threads help (README, "Size the threads for your pull clients").

The number of threads is gunicorn's own (`gunicorn.conf.py` sets it in `post_worker_init`).
Elsewhere (runserver, tests' live server) threads are not counted out, and polls never give way.
Threads that gunicorn keeps busy before or after Django (reading a slow client's request) are not
counted either."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.http import HttpRequest, HttpResponse

# Seconds between two polls giving way in one process: what a queued request waits for a thread
# per request ahead of it, and at most 4 polls a second asked to come again (the JSON API's
# default rate limit is 10 calls a second per key).
GIVE_WAY_INTERVAL = 0.25


class ThreadBudget:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.threads: int | None = None  # gunicorn's, once a worker has started
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
                    self.threads is None
                    or self.busy < self.threads
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
