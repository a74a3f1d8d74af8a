"""`python manage.py deliver`: the delivery worker (the Procfile's `worker:` process)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from sessions_app import delivery
from sessions_app.db_pool import connection_for_each

logger = logging.getLogger("sessions_app.delivery")


class Command(BaseCommand):
    help = "Deliver queued messages to LiveChat and LINE until stopped (SIGTERM/SIGINT)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--threads", type=int, default=None, help="parallel sends (default DELIVERY_THREADS, 4)"
        )
        parser.add_argument(
            "--once", action="store_true", help="deliver what is due now, then exit"
        )

    def handle(self, *args: Any, threads: int | None, once: bool, **options: Any) -> None:
        if once:
            sent = delivery.run_until_idle(timeout=60)
            self.stdout.write(f"delivered {sent} batch(es)")
            return
        stop = threading.Event()

        def request_stop(signum: int, frame: Any) -> None:
            # Heroku sends SIGTERM and waits 30 s: finish the sends in flight, take no new ones.
            logger.info("stopping on signal %s", signum)
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        logger.info("delivery worker started")
        # The start-up checks' connection: the sending threads need it more than this one.
        connections.close_all()
        threads = threads or settings.DELIVERY_THREADS
        connection_for_each(threads)  # the sending threads are all that use the database
        delivery.work(stop, threads=threads)
        logger.info("delivery worker stopped")
