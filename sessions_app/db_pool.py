"""Django's pooled Postgres connections (DATABASE_POOL_SIZE) go back to the pool while a thread
waits on something else: a vendor's answer, or the next look of a long poll.

A process's threads outnumber its pooled connections (threads are sized for long polls), so a
thread that kept its connection through a 10-second LiveChat timeout would leave the others
waiting for one. The worker's threads, as configured by default, are no more than its pool's
connections: each keeps one (`connection_for_each`, called by `manage.py deliver`). Nothing to
do without a pool (SQLite, `DATABASE_POOL_SIZE=0`): each thread then keeps a connection of its
own."""

from __future__ import annotations

from django.conf import settings
from django.db import connection

# Set by a process whose database threads have a pooled connection each (the worker, as
# configured by default): nothing to give back then, and taking a connection again costs the
# pool's health check, a round trip (once per send: a tenth of the worker's time).
_one_each = False


def connection_for_each(threads: int) -> None:
    """Tell the pool helpers that this process has `threads` threads using the database, and no
    others: when the pool holds that many connections, each thread keeps its own."""
    global _one_each
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    _one_each = isinstance(pool, dict) and threads <= pool.get("max_size", 0)


def release_connection() -> None:
    """Give this thread's pooled connection back, unless a transaction is using it (a lock taken
    with `select_for_update` must outlive the call) or it has one of its own; its next query
    takes one again."""
    if (
        not _one_each
        and connection.connection is not None
        and not connection.in_atomic_block
        and getattr(connection, "pool", None) is not None
    ):
        connection.close()
