"""gunicorn settings for Heroku: $PORT, WEB_CONCURRENCY processes, threads for the long poll."""

import os


def _whole_number(name: str, default: int, minimum: int = 0) -> int:
    value = os.environ.get(name, "").strip() or str(default)
    if not (value.isascii() and value.isdigit()):
        raise SystemExit(f"{name} must be a whole number, not {value!r}.")
    if int(value) < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, not {value!r}.")
    return int(value)


bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = _whole_number("WEB_CONCURRENCY", 2, minimum=1)
# /messages holds a request for up to 25 s; threads keep one long poll from blocking a process.
worker_class = "gthread"
threads = _whole_number("GUNICORN_THREADS", 8, minimum=1)
# Heroku's router gives up after 30 s: a request must finish (or be killed) before that.
timeout = 29
graceful_timeout = 25
keepalive = 5
# Import the app once in the master: workers fork ready (a worker that imported Django, DRF and
# line-bot-sdk itself spent ~1 s of CPU before its first answer), and share its pages.
preload_app = True
# A guard against slow leaks, not a routine: recycling costs a fork and cold caches.
max_requests = _whole_number("GUNICORN_MAX_REQUESTS", 20000)
max_requests_jitter = max_requests // 10
forwarded_allow_ips = "*"


def post_worker_init(worker) -> None:
    # Long polls give a thread back when this many requests are in progress (thread_budget.py).
    from sessions_app.thread_budget import budget

    budget.threads = worker.cfg.threads
