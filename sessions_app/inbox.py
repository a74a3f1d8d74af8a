"""The LINE inbox's write side: all that /line/webhook does while LINE waits for its answer.

Each event becomes one `InboundEvent` row, once per `webhookEventId` (one
`INSERT … ON CONFLICT DO NOTHING`: a redelivery is skipped by the database, in the same statement),
committed before the webhook answers 200. Concurrent requests of one web process share one write
(`group_commit.GroupWriter`). The delivery worker applies the rows (`relay.apply_line_inbox`).

This write is the one cost the LINE webhook adds to a bare signature check, so it is made closer to
the driver than the rest of the bridge, for reasons measured with bench/ (see its README):

- It has a connection of its own, one per web process, beside Django's per-thread ones. Django
  pings a persistent connection before each request's first query (`CONN_HEALTH_CHECKS`): on
  Postgres, a round trip per webhook. Here the insert is its own check: it is idempotent, so a
  write that failed on a connection that had gone away is made again, once, on a new one.
- The statement goes to the DB-API cursor as it is, its values bound by the driver (on Postgres,
  by the server): Django's cursor wrapper and the ORM's per-field preparation cost as much CPU
  again as SQLite's own insert.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from contextlib import closing
from typing import Any

from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend
from django.utils import timezone

from .group_commit import GroupWriteFailed, GroupWriter
from .line.webhook import LineEvent
from .models import InboundEvent

# (event_id, event_type, payload) of one event.
NewEvent = tuple[str, str, dict[str, Any]]

# Rows per statement: 6 values each, under SQLite's oldest limit of 999 bound values.
INSERT_CHUNK = 100
# How often a write waiting for SQLite's lock tries again.
LOCK_POLL_SECONDS = 0.001
# A write on a connection that failed within this many seconds is made again on a new one.
RETRY_WITHIN = 0.5
_COLUMNS = ("source", "event_id", "event_type", "payload", "outcome", "received_at")


def event_key(event: LineEvent) -> str:
    """The id an event is kept under: LINE's `webhookEventId`, or a digest of the event."""
    if event.event_id:
        return event.event_id[:128]
    digest = hashlib.sha256(json.dumps(event.raw, sort_keys=True).encode()).hexdigest()[:40]
    return f"digest:{digest}"


def accept_line_events(events: Sequence[LineEvent]) -> None:
    """Store a LINE webhook delivery's events in the inbox, each event once; durable when this
    returns, or DatabaseError."""
    if not events:
        return  # LINE's console "Verify" sends none
    if transaction.get_connection().in_atomic_block:
        # The rows would commit on their own, whatever became of the caller's transaction (and on
        # SQLite wait for the write lock that transaction holds).
        raise RuntimeError("the LINE inbox is written outside any transaction")
    rows = [(event_key(event), event.type[:64], event.raw) for event in events]
    try:
        _line_inbox.submit(rows)
    except GroupWriteFailed as exc:  # the write another request made for these rows failed
        raise DatabaseError(str(exc)) from exc


class InboxConnection:
    """A database connection of the process's own, used by one thread at a time (the group
    writer's leader), opened on first use and after a fork, and closed as `CONN_MAX_AGE` says."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS) -> None:
        self.alias = alias
        self._wrapper: BaseDatabaseWrapper | None = None
        self._pid = 0
        self._statements: dict[int, str] = {}
        self._lock_wait = 0.0

    def insert(self, rows: Sequence[NewEvent]) -> None:
        """Insert `rows` (any already stored are skipped), committed when this returns."""
        wrapper = self._connection()
        was_open = wrapper.connection is not None
        started = time.monotonic()
        try:
            self._insert_when_unlocked(wrapper, rows)
        except (OperationalError, InterfaceError):
            # A connection that worked before may have been dropped since (a database restart, a
            # failover): say so only once a new one has failed too. A refusal on a live connection
            # (SQLite still locked at the deadline) is not tried again: LINE will redeliver. Nor
            # is a write that took its time to fail (a server that vanished): LINE, which waits
            # 2 s, has given up on this answer, and the webhooks queued behind it would wait on.
            if not was_open or wrapper.is_usable() or time.monotonic() - started > RETRY_WITHIN:
                raise
            wrapper.close()
            self._insert_when_unlocked(wrapper, rows)
        finally:
            wrapper.close_if_unusable_or_obsolete()

    def close(self) -> None:
        if self._wrapper is not None and self._pid == os.getpid():
            self._wrapper.close()
        self._wrapper = None

    def _connection(self) -> BaseDatabaseWrapper:
        if self._wrapper is None or self._pid != os.getpid():
            # Never the parent's after a fork: its socket or file handle is not ours to use.
            settings_dict = dict(connections[self.alias].settings_dict)
            self._lock_wait = 0.0
            if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
                # SQLite's own wait for the write lock sleeps 1, 2, 5, 10, 15… ms between tries,
                # so a webhook waited up to twice as long as the worker transaction that held
                # the lock (p99 over 50 ms at 200/s). It tries for 1 ms here, and again every
                # millisecond until the configured timeout.
                options = settings_dict["OPTIONS"]
                self._lock_wait = float(options.get("timeout", 5))
                settings_dict["OPTIONS"] = {**options, "timeout": LOCK_POLL_SECONDS}
            elif settings_dict["ENGINE"] == "django.db.backends.postgresql":
                # Values bound by the server, not quoted into the SQL by psycopg in Python; no
                # prepared statements, which a transaction-mode PgBouncer would lose. Not from
                # Django's pool (DATABASE_POOL_SIZE): a webhook never waits behind the JSON API
                # for a connection, and this one is kept open.
                options = {**settings_dict["OPTIONS"]}
                if options.pop("pool", None):  # which made CONN_MAX_AGE 0
                    settings_dict["CONN_MAX_AGE"] = settings.CONN_MAX_AGE_SECONDS
                settings_dict["OPTIONS"] = {
                    **options,
                    "server_side_binding": True,
                    "prepare_threshold": None,
                    # libpq's least: LINE has stopped waiting by then, and the thread is free.
                    "connect_timeout": 2,
                    # And a server that vanished mid-write (settings.py) is given up as soon,
                    # or while at work on the write, after 1 s of silence and 2 s of probes.
                    "tcp_user_timeout": 2000,
                    "keepalives_idle": 1,
                    "keepalives_interval": 1,
                }
            backend = load_backend(settings_dict["ENGINE"])
            wrapper = backend.DatabaseWrapper(settings_dict, self.alias)
            wrapper.inc_thread_sharing()  # each write may come from another request thread
            self._wrapper, self._pid, self._statements = wrapper, os.getpid(), {}
        return self._wrapper

    def _insert_when_unlocked(self, wrapper: BaseDatabaseWrapper, rows: Sequence[NewEvent]) -> None:
        deadline = time.monotonic() + self._lock_wait
        while True:
            try:
                self._insert(wrapper, rows)
                return
            except OperationalError as exc:
                busy = getattr(exc.__cause__, "sqlite_errorname", "").startswith("SQLITE_BUSY")
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(LOCK_POLL_SECONDS)

    def _insert(self, wrapper: BaseDatabaseWrapper, rows: Sequence[NewEvent]) -> None:
        wrapper.ensure_connection()
        field = InboundEvent._meta.get_field("received_at")
        received_at = field.get_db_prep_save(timezone.now(), wrapper)
        source = InboundEvent.Source.LINE.value
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            params: list[Any] = []
            for event_id, event_type, payload in chunk:
                # JSON text, which SQLite keeps as it is and Postgres casts to jsonb: what
                # JSONField would bind, without the driver's JSON adapter.
                params += (source, event_id, event_type, json.dumps(payload), "", received_at)
            with wrapper.wrap_database_errors, closing(wrapper.connection.cursor()) as cursor:
                cursor.execute(self._statement(wrapper, len(chunk)), params)

    def _statement(self, wrapper: BaseDatabaseWrapper, count: int) -> str:
        statement = self._statements.get(count)
        if statement is None:
            meta = InboundEvent._meta
            quote = wrapper.ops.quote_name
            columns = ", ".join(quote(meta.get_field(name).column) for name in _COLUMNS)
            # The driver's own placeholder: this statement bypasses Django's cursor, which
            # would otherwise translate "%s".
            mark = "?" if wrapper.Database.paramstyle == "qmark" else "%s"
            row = "(" + ", ".join([mark] * len(_COLUMNS)) + ")"
            # Only names from the model and placeholders are formatted in; values are bound.
            statement = (
                f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
                f"VALUES {', '.join([row] * count)} ON CONFLICT DO NOTHING"
            )
            self._statements[count] = statement
        return statement


inbox_connection = InboxConnection()
_line_inbox: GroupWriter[NewEvent] = GroupWriter(inbox_connection.insert, max_batch=INSERT_CHUNK)
