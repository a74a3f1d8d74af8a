"""A web dyno's Postgres connections: a few per process, shared by its threads, however many pull
clients wait at once (the smallest Heroku Postgres plans allow 20 in all)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from tests.conftest import BridgeAPI
from tests.test_operations import manage, production_env

pooled = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="the pool is Postgres's (DATABASE_POOL_SIZE)"
)
APP_NAME = "bridge-web-under-test"  # libpq's PGAPPNAME: which connections are the web process's


def web_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP_NAME]
        )
        return cursor.fetchone()[0]


@pooled
def test_waiting_pull_clients_share_the_pool_and_leave_room_for_others(livechat, web_process):
    url = web_process(
        WEB_CONCURRENCY="1", GUNICORN_THREADS="8", DATABASE_POOL_SIZE="2", PGAPPNAME=APP_NAME
    )
    users = [f"U{n}" for n in range(6)]
    client = BridgeAPI(url)
    for line_id in users:
        assert client.call("/init", {"line_id": line_id})["type"] == "ok"

    answers: list[object] = []

    def poll(line_id: str) -> None:
        try:
            answers.append(BridgeAPI(url).call("/messages", {"line_id": line_id, "wait": 4}))
        except Exception as exc:  # the assertion below shows it
            answers.append(exc)

    peak = 0
    polling = [threading.Thread(target=poll, args=(line_id,)) for line_id in users]
    for thread in polling:
        thread.start()
    time.sleep(1)  # six polls waiting, in six of the process's threads
    started = time.monotonic()
    sent = BridgeAPI(url).call("/send", {"line_id": users[0], "message": "still there?"})
    send_took = time.monotonic() - started
    while any(thread.is_alive() for thread in polling):
        peak = max(peak, web_connections())
        time.sleep(0.05)

    assert sent == {"type": "send", "message": "send"}
    assert send_took < 2  # not queued behind the polls for a connection
    assert answers == [{"type": "ok", "message": ""}] * len(users)
    assert 1 <= peak <= 2  # one connection per waiting poll before the pool: six here


@pooled
def test_a_slow_livechat_call_does_not_hold_the_connection(livechat, web_process):
    url = web_process(WEB_CONCURRENCY="1", GUNICORN_THREADS="8", DATABASE_POOL_SIZE="1")
    client = BridgeAPI(url)
    assert client.call("/init", {"line_id": "U0"})["type"] == "ok"
    livechat.slow("start_chat", 4, times=2)
    starting: list[object] = []

    def init(line_id: str) -> None:
        try:
            starting.append(BridgeAPI(url).call("/init", {"line_id": line_id})["type"])
        except Exception as exc:  # the assertion below shows it
            starting.append(exc)

    threads = [threading.Thread(target=init, args=(line_id,)) for line_id in ("U1", "U2")]
    for thread in threads:
        thread.start()
    time.sleep(1)  # both /init are waiting for LiveChat to start their chats
    started = time.monotonic()
    sent = client.call("/send", {"line_id": "U0", "message": "hello?"})
    send_took = time.monotonic() - started
    for thread in threads:
        thread.join(30)

    assert sent == {"type": "send", "message": "send"}
    assert send_took < 2  # the pool's one connection was free while LiveChat took its time
    assert starting == ["ok", "ok"]


def test_a_malformed_pool_size_stops_the_release():
    result = manage("check", env=production_env(DATABASE_POOL_SIZE="four"))
    assert result.returncode != 0
    assert "DATABASE_POOL_SIZE must be a whole number" in result.stderr
