"""Django's pooled Postgres connections (DATABASE_POOL_SIZE) go back to the pool while a thread
waits on something else: a vendor's answer, or the next look of a long poll.

A process's threads outnumber its pooled connections (threads are sized for long polls), so a
thread that kept its connection through a 10-second LiveChat timeout would leave the others
waiting for one. Nothing to do without a pool (SQLite, `DATABASE_POOL_SIZE=0`): each thread then
keeps a connection of its own."""

from __future__ import annotations

from django.db import connection


def release_connection() -> None:
    """Give this thread's pooled connection back, unless a transaction is using it (a lock taken
    with `select_for_update` must outlive the call); its next query takes one again."""
    if (
        connection.connection is not None
        and not connection.in_atomic_block
        and getattr(connection, "pool", None) is not None
    ):
        connection.close()
