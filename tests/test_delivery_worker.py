"""The worker's threads: an idle worker leaves the database alone, a busy one sends in parallel,
and a slow vendor call holds up only its own mailbox, not the LINE inbox."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.backends.signals import connection_created
from django.utils import timezone

from sessions_app import delivery
from sessions_app.models import ChatSession, InboundEvent, Message
from tests.conftest import wait_until
from tests.fakes.line import text_event
from tests.test_delivery_faults import chat_texts
from tests.test_inbox import hold_sqlite_write_lock

USER = "U" + "3" * 32


@pytest.fixture
def worker() -> Iterator[Callable[..., None]]:
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(threads: int) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=delivery.work, args=(stop,), kwargs={"threads": threads})
        thread.start()
        stops.append((stop, thread))

    yield start
    for stop, _ in stops:
        stop.set()
    for _, thread in stops:
        thread.join(10)
        assert not thread.is_alive(), "the worker did not stop"


@pytest.fixture
def statements_by_thread() -> Iterator[Counter]:
    """SQL statements run by each thread, as SQLite traces them."""
    if connection.vendor != "sqlite":
        pytest.skip("counts statements with SQLite's trace callback")
    counts: Counter = Counter()

    def trace(sender, connection, **kwargs) -> None:
        name = threading.current_thread().name
        connection.connection.set_trace_callback(lambda sql: counts.update([name]))

    connection_created.connect(trace)
    yield counts
    connection_created.disconnect(trace)


@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_polls_the_database_from_one_thread(worker, statements_by_thread):
    worker(threads=4)
    time.sleep(1.5)
    first = statements_by_thread["delivery-0"]
    others = [statements_by_thread[f"delivery-{n}"] for n in (1, 2, 3)]
    # The first thread polls every 50 ms; the others look once at the start and once a second.
    assert first >= 20
    assert all(count <= first / 4 for count in others), statements_by_thread


def test_a_burst_is_sent_by_every_thread_in_each_users_order(api, livechat, worker, caplog):
    sessions = []
    for n in range(6):
        api.call("/init", {"line_id": f"U{n}"})
        sessions.append(ChatSession.objects.get(line_id=f"U{n}"))
    caplog.set_level(logging.INFO, logger="sessions_app.delivery")
    worker(threads=3)
    time.sleep(0.3)  # idle: only the first thread is looking
    livechat.slow("send_event", 0.05, times=48)  # long enough for the others to wake and help
    for i in range(8):
        for n in range(6):
            api.call("/send", {"line_id": f"U{n}", "message": f"U{n}-{i}"})
    wait_until(lambda: not Message.objects.filter(status=Message.Status.PENDING).exists(), 30)
    for n, session in enumerate(sessions):
        assert chat_texts(livechat, session) == [f"U{n}-{i}" for i in range(8)]
    assert len(livechat.calls_to("send_event")) == 48
    senders = {r.threadName for r in caplog.records if r.getMessage().startswith("delivered")}
    assert senders == {"delivery-0", "delivery-1", "delivery-2"}


def test_a_slow_livechat_call_holds_up_only_its_own_user(api, livechat, worker):
    for line_id in ("U1", "U2"):
        api.call("/init", {"line_id": line_id})
    other = ChatSession.objects.get(line_id="U2")
    livechat.slow("send_event", 5.0)  # under the 10 s read timeout: it succeeds, late
    api.call("/send", {"line_id": "U1", "message": "answered late"})
    worker(threads=2)
    wait_until(lambda: livechat.calls_to("send_event"), 5)
    started = time.monotonic()
    api.call("/send", {"line_id": "U2", "message": "not held up"})
    wait_until(lambda: chat_texts(livechat, other) == ["not held up"], 5)
    assert time.monotonic() - started < 3
    late = Message.objects.get(body="answered late")
    assert late.status == Message.Status.PENDING and late.leased_until  # still in its call
    wait_until(lambda: Message.objects.get(pk=late.pk).status == Message.Status.SENT, 10)
    assert len(livechat.calls_to("send_event")) == 2


def test_a_slow_call_in_the_first_thread_does_not_hold_line_users_new_messages(
    api, line, livechat, worker
):
    api.call("/init", {"line_id": "U1"})
    worker(threads=2)
    time.sleep(0.3)  # idle: the first thread looks, the other waits to be woken
    livechat.slow("send_event", 5.0)  # under the 10 s read timeout: it succeeds, late
    api.call("/send", {"line_id": "U1", "message": "answered late"})
    # Taken by the first thread, the one that applies the LINE inbox: the other one is woken only
    # once that thread holds it.
    wait_until(lambda: livechat.calls_to("send_event"), 5)
    writer = "U" + "2" * 32
    started = time.monotonic()
    status, _ = line.post_events([text_event(writer, "not held up")])
    assert status == 200
    wait_until(
        lambda: (
            ChatSession.objects.filter(line_id=writer, chat_id__gt="").exists()
            and chat_texts(livechat, ChatSession.objects.get(line_id=writer)) == ["not held up"]
        ),
        4,
    )
    assert time.monotonic() - started < 2.5
    late = Message.objects.get(body="answered late")
    assert late.status == Message.Status.PENDING and late.leased_until  # still in its call
    wait_until(lambda: Message.objects.get(pk=late.pk).status == Message.Status.SENT, 10)


@pytest.mark.skipif("connection.vendor != 'sqlite'", reason="SQLite's one write lock")
def test_a_worker_the_database_fails_goes_on_once_it_is_back(
    line, livechat, worker, monkeypatch, caplog
):
    line.post_events([text_event(USER, "written while the database was busy")])
    # The worker's connections give up on the write lock after 0.2 s, not 20.
    options = {**connection.settings_dict["OPTIONS"], "timeout": 0.2}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    other = hold_sqlite_write_lock()
    try:
        worker(threads=1)  # applying the inbox fails: OperationalError, database is locked
        wait_until(lambda: "delivery loop error" in caplog.messages, 5)
    finally:
        other.rollback()
    wait_until(lambda: ChatSession.objects.filter(line_id=USER, chat_id__gt="").exists(), 5)
    session = ChatSession.objects.get(line_id=USER)
    wait_until(lambda: chat_texts(livechat, session) == ["written while the database was busy"])


def test_deliver_once_sends_what_is_due_then_exits(api, livechat):
    api.call("/init", {"line_id": "U1"})
    for text in ("one", "two"):
        api.call("/send", {"line_id": "U1", "message": text})
    out = io.StringIO()
    started = time.monotonic()
    call_command("deliver", "--once", stdout=out)
    assert time.monotonic() - started < 10  # at once, not at the end of its 60 s
    assert out.getvalue() == "delivered 2 batch(es)\n"
    assert chat_texts(livechat, ChatSession.objects.get(line_id="U1")) == ["one", "two"]


def test_a_worker_prunes_the_inbox_of_events_applied_over_a_week_ago(line, livechat, drain, worker):
    line.post_events([text_event(USER, "last week")])
    drain()
    InboundEvent.objects.update(received_at=timezone.now() - timedelta(days=8))
    worker(threads=1)  # at its start, then hourly
    wait_until(lambda: not InboundEvent.objects.exists(), 5)
