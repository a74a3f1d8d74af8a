"""The database unavailable for a while: every caller is told 503 and to retry (the JSON API with
Retry-After), nothing of what they sent is kept half-way, and what they send again once the
database is back arrives once."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from django.db import connection, transaction
from django.db.models import Model

from sessions_app.models import ChatSession, InboundEvent, Message
from tests.conftest import BridgeAPI, wait_until
from tests.fakes.line import redelivered, text_event
from tests.network_link import LinkUnavailable, NetworkLink
from tests.tcp_proxy import TcpProxy
from tests.test_inbox import hold_sqlite_write_lock

UNAVAILABLE = {"type": "fail", "message": "database unavailable; retry"}
USER = "U" + "2" * 32
sqlite_only = pytest.mark.skipif("connection.vendor != 'sqlite'", reason="SQLite's write lock")
postgres_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="a Postgres server that goes away"
)


def user_texts(livechat, line_id: str) -> list[str]:
    """The user's messages in their LiveChat chat, as the agent sees them."""
    session = ChatSession.objects.get(line_id=line_id)
    events = [e for t in livechat.chats[session.chat_id]["threads"] for e in t["events"]]
    return [
        e["text"]
        for e in events
        if e["type"] == "message" and e["author_id"] == session.customer_id
    ]


def bridge_on(database_url: str, line, livechat, web_process) -> tuple[str, BridgeAPI, str]:
    """The bridge under gunicorn on `database_url`, both fakes' webhooks pointed at it, and the
    JSON API's user U1 in a chat: (its URL, a client of its JSON API, U1's chat id)."""
    url = web_process(WEB_CONCURRENCY="1", GUNICORN_THREADS="8", DATABASE_URL=database_url)
    line.webhook_url, livechat.webhook_url = f"{url}/line/webhook", f"{url}/livechat/webhook"
    api = BridgeAPI(url)
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    return url, api, ChatSession.objects.get(line_id="U1").chat_id


def all_at_once(calls: dict[str, Callable[[], object]], wait: float) -> dict[str, tuple]:
    """Each call's answer (or exception) and the seconds it took, the calls made in parallel."""
    answers: dict[str, tuple] = {}

    def call(name: str, do: Callable[[], object]) -> None:
        started = time.monotonic()
        try:
            answers[name] = (do(), time.monotonic() - started)
        except Exception as exc:  # the assertions show it
            answers[name] = (exc, time.monotonic() - started)

    threads = [threading.Thread(target=call, args=item) for item in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(wait)
    return answers


def webhook_statuses(livechat, envelope: dict) -> list[int | None]:
    """What the bridge answered each time the fake LiveChat posted `envelope`."""
    return [status for sent, status in livechat.webhooks_sent if sent == envelope]


@pytest.fixture
def postgres_proxy() -> Iterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of the test's Postgres server, and the database's URL through it."""
    s = connection.settings_dict
    proxy = TcpProxy((s["HOST"] or "127.0.0.1", int(s["PORT"] or 5432)))
    try:
        yield proxy, f"postgres://{s['USER']}:{s['PASSWORD']}@127.0.0.1:{proxy.port}/{s['NAME']}"
    finally:
        proxy.close()


@pytest.fixture
def postgres_link() -> Iterator[tuple[NetworkLink, str]]:
    """A network link to the test's Postgres server that can be cut without a word, and the
    database's URL across it."""
    s = connection.settings_dict
    try:
        link = NetworkLink((s["HOST"] or "127.0.0.1", int(s["PORT"] or 5432)))
    except LinkUnavailable as exc:
        if os.environ.get("REQUIRE_NETWORK_LINK"):  # CI: this test must run there, not skip
            raise
        pytest.skip(str(exc))
    try:
        yield link, f"postgres://{s['USER']}:{s['PASSWORD']}@{link.address}:{link.port}/{s['NAME']}"
    finally:
        link.close()


@contextmanager
def locked(model: type[Model] = ChatSession, mode: str = "EXCLUSIVE") -> Iterator[None]:
    """`model`'s table can be read but not written until the block ends (a worker or request with
    a `lock_timeout` gets OperationalError); in ACCESS EXCLUSIVE mode, not even read."""
    table = connection.ops.quote_name(model._meta.db_table)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {table} IN {mode} MODE")
        yield


def waiting_for_a_lock() -> int:
    """How many other connections are waiting for a lock (asked from within a transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else read once per transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def cut_off_while_the_server_works(
    link: NetworkLink, model: type[Model], calls: dict[str, Callable[[], object]]
) -> dict[str, tuple]:
    """What `calls` answered (see `all_at_once`) when the link was cut while the server was at
    work on their query: acknowledged, and waiting for a lock on `model`'s table."""
    answers: dict[str, tuple] = {}
    with locked(model, "ACCESS EXCLUSIVE"):
        calling = threading.Thread(target=lambda: answers.update(all_at_once(calls, wait=40)))
        calling.start()
        wait_until(lambda: waiting_for_a_lock() == 1, 10)
        time.sleep(0.5)  # past TCP's delayed acknowledgement (200 ms at most)
        link.cut()
        calling.join(45)
    link.mend()
    return answers


@pytest.fixture
def short_sqlite_timeout(monkeypatch) -> None:
    # Each connection the live server opens from now on gives up on the lock after 0.2 s, not 20.
    options = {**connection.settings_dict["OPTIONS"], "timeout": 0.2}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)


@sqlite_only
def test_a_send_locked_out_of_sqlite_is_a_503_to_retry_and_the_retry_goes_once(
    api, livechat, drain, short_sqlite_timeout
):
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    other = hold_sqlite_write_lock()  # a worker transaction that outlasts the timeout
    try:
        response = api.post("/send", {"line_id": "U1", "message": "are you there?"})
    finally:
        other.rollback()
    assert response.status_code == 503
    assert response.json() == UNAVAILABLE
    assert response.headers["Retry-After"] == "5"
    assert not Message.objects.filter(direction=Message.Direction.TO_AGENT).exists()

    assert api.call("/send", {"line_id": "U1", "message": "are you there?"})["type"] == "send"
    drain()
    assert user_texts(livechat, "U1") == ["are you there?"]


@sqlite_only
def test_an_agent_reply_locked_out_of_sqlite_is_a_503_and_livechats_resend_goes_once(
    api, livechat, short_sqlite_timeout
):
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    other = hold_sqlite_write_lock()
    try:
        envelope = livechat.agent_says(chat_id, "one moment")  # LiveChat posts the webhook
    finally:
        other.rollback()
    assert webhook_statuses(livechat, envelope) == [503]
    assert not Message.objects.filter(body="one moment").exists()

    assert livechat.post_webhook(envelope) == 200  # LiveChat's retry
    assert livechat.post_webhook(envelope) == 200  # and a retry of the retry
    assert api.call("/messages", {"line_id": "U1", "wait": 1})["message"] == "one moment"
    assert api.call("/messages", {"line_id": "U1", "wait": 0.1}) == {"type": "ok", "message": ""}


@postgres_only
def test_postgres_away_then_back_every_caller_retries_and_each_message_arrives_once(
    line, livechat, drain, web_process, postgres_proxy
):
    proxy, database_url = postgres_proxy
    url, api, chat_id = bridge_on(database_url, line, livechat, web_process)
    from_line = text_event(USER, "written during the outage")

    proxy.down()  # every connection the web process had is cut; new ones are refused
    went_down = time.monotonic()
    answers = all_at_once(
        {
            "send": lambda: api.post("/send", {"line_id": "U1", "message": "sent in the outage"}),
            "line": lambda: line.post_events([from_line])[0],
            "livechat": lambda: livechat.agent_says(chat_id, "answered during the outage"),
            "healthz": lambda: requests.get(f"{url}/healthz", timeout=15).status_code,
        },
        wait=30,
    )
    # Away for 8 s: the pool's own retries (after 1, 2, 4, 8 s) would next try at 15 s.
    time.sleep(max(0.0, 8 - (time.monotonic() - went_down)))
    proxy.up()

    sent, send_took = answers["send"]
    assert (sent.status_code, sent.json()) == (503, UNAVAILABLE)
    assert sent.headers["Retry-After"] == "5"
    assert 4 < send_took < 7  # the pool's 5 s wait for a connection, then the answer
    assert answers["line"][0] == 503  # its own connection: refused at once
    assert answers["line"][1] < 2  # well inside LINE's 2 s, so LINE redelivers
    from_agent, webhook_took = answers["livechat"]
    assert webhook_statuses(livechat, from_agent) == [503]
    assert webhook_took < 7  # LiveChat waits ~10 s for an answer
    assert answers["healthz"][0] == 503
    assert not Message.objects.filter(direction=Message.Direction.TO_AGENT).exists()
    assert not Message.objects.filter(direction=Message.Direction.TO_USER).exists()

    # Back: each caller's first retry is taken, at once, and once.
    started = time.monotonic()
    sent = api.post("/send", {"line_id": "U1", "message": "sent in the outage"})
    recovered_in = time.monotonic() - started
    assert (sent.status_code, sent.json()["type"]) == (200, "send")
    assert recovered_in < 4, recovered_in  # psycopg_pool's own retry came at 15 s
    assert line.post_events([redelivered(from_line)])[0] == 200
    assert livechat.post_webhook(from_agent) == 200
    assert livechat.post_webhook(from_agent) == 200
    reply = api.call("/messages", {"line_id": "U1", "wait": 1})
    assert reply == {"type": "message", "message": "answered during the outage"}
    assert api.call("/messages", {"line_id": "U1", "wait": 0.1})["message"] == ""
    drain()
    assert user_texts(livechat, "U1") == ["sent in the outage"]
    assert user_texts(livechat, USER) == ["written during the outage"]


@postgres_only
def test_a_send_the_database_interrupts_is_retried_and_reaches_livechat_once(
    api, livechat, drain, worker_process
):
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    session = ChatSession.objects.get(line_id="U1")
    livechat.agent_ends_chat(session.chat_id)
    assert api.call("/send", {"line_id": "U1", "message": "back again"})["type"] == "send"
    message = Message.objects.get(body="back again")
    with locked():
        # The worker's record of the resumed chat's new thread, after LiveChat has the message,
        # fails once its lock wait runs out.
        worker_process(PGOPTIONS="-c lock_timeout=300")
        wait_until(lambda: "lock timeout" in Message.objects.get(pk=message.pk).last_error)
        interrupted = Message.objects.get(pk=message.pk)
        # Interrupted after LiveChat had the message: the chat was resumed with it, once.
        resumed = livechat.calls_to("resume_chat")
    assert len(resumed) == 1
    assert "back again" in json.dumps(resumed[0].body)
    assert interrupted.status == Message.Status.PENDING  # not failed for good
    assert interrupted.uncertain  # LiveChat may have it: the next attempt looks first
    wait_until(lambda: Message.objects.get(pk=message.pk).status == Message.Status.SENT)
    message.refresh_from_db()
    assert user_texts(livechat, "U1") == ["back again"]  # once, though attempted again
    assert message.livechat_event_id


@postgres_only
@pytest.mark.parametrize("retried", [True, False], ids=["init-retried", "send-at-once"])
def test_an_init_interrupted_after_livechat_started_the_chat_is_retried_into_that_chat(
    livechat, drain, web_process, retried
):
    api = BridgeAPI(web_process(WEB_CONCURRENCY="1", PGOPTIONS="-c lock_timeout=300"))
    livechat.slow("start_chat", 2)
    answers: list[requests.Response] = []
    opening = threading.Thread(target=lambda: answers.append(api.post("/init", {"line_id": "U1"})))
    opening.start()
    wait_until(lambda: livechat.calls_to("start_chat"))
    with locked():
        # LiveChat is starting the chat; the bridge's record of it will wait 300 ms, then fail.
        opening.join(15)
    (interrupted,) = answers
    assert (interrupted.status_code, interrupted.json()) == (503, UNAVAILABLE)
    assert not ChatSession.objects.get(line_id="U1").chat_id
    assert len(livechat.chats) == 1  # LiveChat has the chat; the bridge lost its id

    if retried:  # as the 503 asked; otherwise the worker finds the chat when it sends
        assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    assert api.call("/send", {"line_id": "U1", "message": "hello"})["type"] == "send"
    drain()
    session = ChatSession.objects.get(line_id="U1")
    assert list(livechat.chats) == [session.chat_id]  # the same chat, found again
    assert session.thread_id == livechat.chats[session.chat_id]["threads"][-1]["id"]
    assert user_texts(livechat, "U1") == ["hello"]


@postgres_only
def test_a_postgres_that_accepts_but_never_answers_holds_a_line_webhook_2_s_at_most(
    line, web_process, postgres_proxy
):
    proxy, database_url = postgres_proxy
    line.webhook_url = f"{web_process(DATABASE_URL=database_url)}/line/webhook"
    event = text_event(USER, "anyone?")
    proxy.hang()  # the web process's first webhook opens the inbox's connection now
    started = time.monotonic()
    status, _ = line.post_events([event])
    waited = time.monotonic() - started
    assert status == 503 and waited < 4  # psycopg alone would wait 130 s to connect
    proxy.up()
    assert line.post_events([redelivered(event)])[0] == 200
    assert InboundEvent.objects.get().event_id == event["webhookEventId"]


@postgres_only
def test_postgres_cut_off_without_a_word_frees_every_caller_in_seconds_not_minutes(
    line, livechat, drain, web_process, postgres_link
):
    # A failover whose old server vanished: open connections hear nothing, and TCP alone would
    # resend for ~15 minutes while every thread that had a query in flight waited with it.
    link, database_url = postgres_link
    url, api, chat_id = bridge_on(database_url, line, livechat, web_process)
    assert line.post_events([text_event(USER, "before")])[0] == 200  # the inbox's connection
    from_line = text_event(USER, "written while cut off")

    link.cut()
    answers = all_at_once(
        {
            "send": lambda: api.post("/send", {"line_id": "U1", "message": "sent while cut off"}),
            "line": lambda: line.post_events([from_line])[0],
            "livechat": lambda: livechat.agent_says(chat_id, "answered while cut off"),
        },
        wait=40,
    )
    link.mend()

    sent, send_took = answers["send"]
    assert (sent.status_code, sent.json()) == (503, UNAVAILABLE), sent
    assert send_took < 8, send_took  # the pool's 5 s wait for a connection, then the answer
    line_status, line_took = answers["line"]
    assert line_status == 503 and line_took < 3, answers["line"]  # LINE will redeliver
    from_agent, webhook_took = answers["livechat"]
    assert webhook_statuses(livechat, from_agent) == [503]
    assert webhook_took < 8, webhook_took  # LiveChat waits ~10 s, then sends it again
    assert not Message.objects.filter(body__endswith="while cut off").exists()

    # Back: what each caller sends again arrives once.
    wait_until(lambda: requests.get(f"{url}/healthz", timeout=5).status_code == 200, 20)
    assert api.call("/send", {"line_id": "U1", "message": "sent while cut off"})["type"] == "send"
    assert line.post_events([redelivered(from_line)])[0] == 200
    assert livechat.post_webhook(from_agent) == 200
    assert (
        api.call("/messages", {"line_id": "U1", "wait": 1})["message"] == "answered while cut off"
    )
    drain()
    assert user_texts(livechat, "U1") == ["sent while cut off"]
    assert user_texts(livechat, USER) == ["before", "written while cut off"]


@postgres_only
def test_postgres_cut_off_while_at_work_on_a_query_frees_the_caller_in_seconds_not_hours(
    line, livechat, drain, web_process, postgres_link
):
    # The server had acknowledged the query and was still at work on it when its host vanished.
    # Nothing of ours is then unacknowledged, so tcp_user_timeout never starts: only keepalives
    # can tell, and the system's default sends the first one after two hours of silence.
    link, database_url = postgres_link
    url, api, _ = bridge_on(database_url, line, livechat, web_process)
    assert line.post_events([text_event(USER, "before")])[0] == 200  # the inbox's connection
    first = text_event(USER, "in flight 1")
    second = text_event(USER, "in flight 2", timestamp=first["timestamp"] + 1)

    answers = cut_off_while_the_server_works(
        link,
        ChatSession,
        {"send": lambda: api.post("/send", {"line_id": "U1", "message": "in flight"})},
    )
    (sent, send_took) = answers["send"]
    assert isinstance(sent, requests.Response), f"{sent!r} after {send_took:.1f} s"
    assert (sent.status_code, sent.json()) == (503, UNAVAILABLE), sent
    assert send_took < 12, send_took  # 5 s of silence, then 5 s without an answer
    # The inbox's writer, and the webhooks queued behind its write: the whole LINE webhook.
    answers = cut_off_while_the_server_works(
        link,
        InboundEvent,
        {
            "first": lambda: line.post_events([first])[0],
            "second": lambda: line.post_events([second])[0],
        },
    )
    assert [answers[n][0] for n in ("first", "second")] == [503, 503], answers
    # The write at work: 1 s of silence, then 2 s of probes. What queued behind it is written on
    # a new connection, whose attempt gives up after 2 s.
    assert max(took for _, took in answers.values()) < 8, answers
    assert not Message.objects.filter(body__startswith="in flight").exists()

    wait_until(lambda: requests.get(f"{url}/healthz", timeout=5).status_code == 200, 20)
    assert api.call("/send", {"line_id": "U1", "message": "in flight"})["type"] == "send"
    assert line.post_events([redelivered(first), redelivered(second)])[0] == 200
    drain()
    assert user_texts(livechat, "U1") == ["in flight"]
    assert user_texts(livechat, USER) == ["before", "in flight 1", "in flight 2"]
