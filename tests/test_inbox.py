"""The LINE inbox: what /line/webhook stores before it answers, and what LINE is told when the
database cannot take it."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from sessions_app import delivery
from sessions_app.inbox import accept_line_events, inbox_connection
from sessions_app.line.webhook import event_from
from sessions_app.models import ChatSession, InboundEvent
from tests.fakes.line import redelivered, text_event

USER = "U" + "2" * 32


def test_each_event_is_kept_once_with_its_payload(transactional_db):
    raw = text_event(USER, "héllo 👋")
    event = event_from(raw)
    accept_line_events([event, event])  # a duplicate within one delivery
    accept_line_events([event_from(redelivered(raw))])  # and LINE's redelivery of it
    stored = InboundEvent.objects.get()
    assert (stored.source, stored.event_id, stored.event_type) == (
        "line",
        raw["webhookEventId"],
        "message",
    )
    assert stored.payload == raw and stored.applied_at is None and stored.outcome == ""
    many = [event_from(text_event(USER, f"m{i}")) for i in range(250)]
    accept_line_events(many)  # more than one statement's worth
    assert InboundEvent.objects.filter(applied_at__isnull=True).count() == 251


def test_an_event_without_an_id_is_kept_once_under_its_digest(transactional_db):
    raw = text_event(USER, "no id")
    del raw["webhookEventId"]
    accept_line_events([event_from(raw)])
    accept_line_events([event_from(dict(raw))])
    assert InboundEvent.objects.get().event_id.startswith("digest:")


def test_the_inbox_refuses_to_write_inside_a_transaction(transactional_db):
    # Its rows would commit on their own whatever became of the caller's transaction.
    with transaction.atomic(), pytest.raises(RuntimeError):
        accept_line_events([event_from(text_event(USER, "x"))])
    assert not InboundEvent.objects.exists()


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="a server that drops connections")
def test_a_connection_the_server_dropped_is_replaced_and_nothing_is_lost(
    transactional_db, monkeypatch, settings
):
    # As in production: the inbox keeps its connection from one write to the next.
    settings.CONN_MAX_AGE_SECONDS = 600  # with a pool
    if "pool" not in connection.settings_dict["OPTIONS"]:
        monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 600)
    inbox_connection.close()
    try:
        accept_line_events([event_from(text_event(USER, "before"))])
        with connection.cursor() as cursor:  # what a database restart or failover does
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.fetchone()[0] >= 1
        accept_line_events([event_from(text_event(USER, "after"))])
    finally:
        inbox_connection.close()
    texts = [e.payload["message"]["text"] for e in InboundEvent.objects.order_by("id")]
    assert texts == ["before", "after"]


def test_a_delivery_the_database_cannot_store_is_a_503_and_its_redelivery_goes_once(
    line, livechat, drain
):
    table = connection.ops.quote_name(InboundEvent._meta.db_table)
    away = connection.ops.quote_name(InboundEvent._meta.db_table + "_away")
    event = text_event(USER, "are you there?")
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {away}")
    try:
        status, answer = line.post_events([event])
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {away} RENAME TO {table}")
    # Not stored, so not acknowledged: LINE redelivers it (with redelivery on).
    assert status == 503 and b"retry" in answer
    assert not InboundEvent.objects.exists()
    assert line.post_events([redelivered(event)])[0] == 200
    assert line.post_events([redelivered(event)])[0] == 200
    drain()
    chat = livechat.chats[ChatSession.objects.get(line_id=USER).chat_id]
    texts = [e["text"] for t in chat["threads"] for e in t["events"] if e["type"] == "message"]
    assert texts == ["are you there?"]


def test_pruning_forgets_only_events_applied_over_a_week_ago(line, livechat, drain):
    week_old, recent, waiting = (text_event(USER, t) for t in ("last week", "6 days", "waiting"))
    line.post_events([week_old, recent])
    drain()
    line.post_events([waiting])  # stored, not applied yet (say, the worker was down)
    for event, days in ((week_old, 8), (recent, 6), (waiting, 8)):
        InboundEvent.objects.filter(event_id=event["webhookEventId"]).update(
            received_at=timezone.now() - timedelta(days=days)
        )
    assert delivery.prune_inbound_events() == 1
    # The waiting event is still applied, and the recent one still known when LINE redelivers it.
    assert line.post_events([redelivered(recent)])[0] == 200
    drain()
    chat = livechat.chats[ChatSession.objects.get(line_id=USER).chat_id]
    texts = [e["text"] for t in chat["threads"] for e in t["events"] if e["type"] == "message"]
    assert texts == ["last week", "6 days", "waiting"]


def hold_sqlite_write_lock() -> sqlite3.Connection:
    """What a worker transaction applying the inbox holds: SQLite's one write lock."""
    other = sqlite3.connect(
        connection.settings_dict["NAME"], isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")
    return other


@pytest.mark.skipif("connection.vendor != 'sqlite'", reason="SQLite's one write lock")
def test_a_delivery_waits_for_the_sqlite_write_lock_then_is_stored(line):
    other = hold_sqlite_write_lock()
    started = time.monotonic()  # before the timer: the lock is then held 0.3 s past it at least
    threading.Timer(0.3, other.rollback).start()
    status, _ = line.post_events([text_event(USER, "waited")])
    assert status == 200 and time.monotonic() - started >= 0.3
    assert InboundEvent.objects.get().payload["message"]["text"] == "waited"


@pytest.mark.skipif("connection.vendor != 'sqlite'", reason="SQLite's one write lock")
def test_a_delivery_locked_out_past_the_timeout_is_a_503_and_its_redelivery_is_stored(
    line, monkeypatch
):
    options = {**connection.settings_dict["OPTIONS"], "timeout": 0.2}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    inbox_connection.close()  # the next write connects with these settings
    event = text_event(USER, "locked out")
    other = hold_sqlite_write_lock()
    try:
        started = time.monotonic()
        status, _ = line.post_events([event])
        waited = time.monotonic() - started
    finally:
        other.rollback()
        inbox_connection.close()
    assert status == 503 and 0.2 <= waited < 2
    assert line.post_events([redelivered(event)])[0] == 200
    assert InboundEvent.objects.get().event_id == event["webhookEventId"]
