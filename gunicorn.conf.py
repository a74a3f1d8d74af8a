"""gunicorn settings for Heroku: $PORT, WEB_CONCURRENCY processes, threads for the long poll."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# /messages holds a request for up to 25 s; threads keep one long poll from blocking a process.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Heroku's router gives up after 30 s: a request must finish (or be killed) before that.
timeout = 29
graceful_timeout = 25
keepalive = 5
max_requests = 2000
max_requests_jitter = 200
forwarded_allow_ips = "*"
