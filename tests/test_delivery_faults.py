"""A LiveChat outage, a rate limit, a timeout or a dead worker delays a message; it never loses
or duplicates one."""

from __future__ import annotations

import io
import signal
import threading
import time
from datetime import timedelta

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from sessions_app import delivery, relay
from sessions_app.models import ChatSession, Message
from tests.conftest import pending, wait_until
from tests.fakes.line import text_event


def chat_texts(livechat, session: ChatSession) -> list[str]:
    chat = livechat.chats[session.chat_id]
    return [e["text"] for t in chat["threads"] for e in t["events"] if e["type"] == "message"]


@pytest.fixture
def session(api, livechat) -> ChatSession:
    api.call("/init", {"line_id": "U1"})
    return ChatSession.objects.get(line_id="U1")


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(503, "service_unavailable"), (500, "internal"), (429, "too_many_requests")],
)
def test_outage_delays_but_loses_and_duplicates_nothing(
    api, livechat, session, drain, status, error_type
):
    livechat.fail("send_event", status=status, error_type=error_type, times=3)
    assert api.call("/send", {"line_id": "U1", "message": "first"})["type"] == "send"
    api.call("/send", {"line_id": "U1", "message": "second"})
    delivery.run_once()
    first = Message.objects.get(body="first")
    assert first.status == Message.Status.PENDING
    assert first.last_error and first.next_attempt_at > first.created_at
    # Order holds: "second" waits behind "first" rather than overtaking it.
    assert chat_texts(livechat, session) == []
    drain()
    assert chat_texts(livechat, session) == ["first", "second"]
    first.refresh_from_db()
    assert first.status == Message.Status.SENT and first.attempts == 4
    assert first.sent_at >= first.next_attempt_at  # when, as operators see it: at its 4th try


def test_timeout_after_livechat_took_the_message_sends_it_once(
    api, livechat, session, drain, settings
):
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    livechat.slow("send_event", 1.0)
    api.call("/send", {"line_id": "U1", "message": "slow one"})
    drain()
    time.sleep(1.0)  # let the slow answer finish on the fake's side
    assert chat_texts(livechat, session) == ["slow one"]
    message = Message.objects.get(body="slow one")
    assert message.status == Message.Status.SENT
    assert message.livechat_event_id
    assert not message.uncertain and not message.last_error  # settled, as the admin shows it


def test_a_timeout_then_an_outage_still_checks_before_sending_again(
    api, livechat, session, drain, settings
):
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    livechat.slow("send_event", 1.0)  # LiveChat takes it, its answer comes too late
    api.call("/send", {"line_id": "U1", "message": "taken, unanswered"})
    delivery.run_once()
    time.sleep(1.0)
    # The next attempt asks LiveChat whether it has it first, and meets an outage.
    livechat.fail("get_chat", status=503, times=1)
    Message.objects.update(next_attempt_at=timezone.now())
    delivery.run_once()
    row = Message.objects.get(body="taken, unanswered")
    assert row.status == Message.Status.PENDING and row.attempts == 2
    drain()
    assert chat_texts(livechat, session) == ["taken, unanswered"]
    assert Message.objects.get(pk=row.pk).status == Message.Status.SENT


def test_a_message_still_failing_past_the_maximum_age_fails_for_good(
    api, livechat, session, drain, settings
):
    settings.DELIVERY_MAX_AGE_SECONDS = 3600
    api.call("/send", {"line_id": "U1", "message": "a day late"})
    api.call("/send", {"line_id": "U1", "message": "next"})
    Message.objects.filter(body="a day late").update(
        created_at=timezone.now() - timezone.timedelta(hours=2)
    )
    livechat.fail("send_event", status=503, times=1)
    drain()
    late = Message.objects.get(body="a day late")
    assert late.status == Message.Status.FAILED and "503" in late.last_error
    assert chat_texts(livechat, session) == ["next"]  # and it no longer holds up the next


def test_livechat_unreachable_then_back(api, livechat, session, drain, settings):
    real = settings.LIVECHAT_API_BASE_URL
    settings.LIVECHAT_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens on discard
    api.call("/send", {"line_id": "U1", "message": "while down"})
    delivery.run_once()
    assert "connect" in Message.objects.get(body="while down").last_error
    settings.LIVECHAT_API_BASE_URL = real
    drain()
    assert chat_texts(livechat, session) == ["while down"]


def test_permanent_error_is_recorded_and_does_not_block_the_next(api, livechat, session, drain):
    livechat.fail("send_event", status=400, error_type="validation", times=1)
    api.call("/send", {"line_id": "U1", "message": "refused"})
    api.call("/send", {"line_id": "U1", "message": "next"})
    drain()
    refused = Message.objects.get(body="refused")
    assert refused.status == Message.Status.FAILED
    assert "validation" in refused.last_error
    assert chat_texts(livechat, session) == ["next"]


def test_worker_killed_mid_send_leaves_nothing_stuck(api, livechat, session, worker_process):
    livechat.slow("send_event", 3.0)
    api.call("/send", {"line_id": "U1", "message": "in flight"})
    first = worker_process(DELIVERY_LEASE_SECONDS="2")
    wait_until(lambda: livechat.calls_to("send_event"), timeout=20)
    first.send_signal(signal.SIGKILL)
    first.wait(5)
    row = Message.objects.get(body="in flight")
    assert row.status == Message.Status.PENDING and row.leased_until is not None

    worker_process(DELIVERY_LEASE_SECONDS="2")
    wait_until(
        lambda: Message.objects.get(body="in flight").status == Message.Status.SENT, timeout=30
    )
    time.sleep(0.5)
    assert chat_texts(livechat, session).count("in flight") == 1


def test_a_worker_late_with_a_head_keeps_the_backoff_another_worker_set(
    api, livechat, session, settings
):
    # A backoff the test cannot outlast on a busy machine (the suite's is 25-50 ms).
    settings.DELIVERY_BACKOFF_BASE = settings.DELIVERY_BACKOFF_MAX = 30
    livechat.fail("send_event", status=503, error_type="service_unavailable", times=1)
    api.call("/send", {"line_id": "U1", "message": "backing off"})
    # Worker A reads the due head, then stalls; meanwhile worker B tries it and LiveChat says 503.
    [stale_head] = delivery.due_heads(delivery.WORKER_ROUTES, limit=8)
    delivery.run_once()
    row = Message.objects.get(body="backing off")
    assert row.status == Message.Status.PENDING and row.next_attempt_at > timezone.now()
    calls = len(livechat.calls_to("send_event"))

    # A goes on: the row is not due, so A must not take it (nor retry LiveChat at once).
    assert delivery.lease(stale_head, batch_size=1) == ("", [])
    row.refresh_from_db()
    assert row.attempts == 1 and row.leased_until is None
    delivery.run_once()
    assert len(livechat.calls_to("send_event")) == calls
    assert chat_texts(livechat, session) == []


def test_under_a_backlog_the_longest_waiting_users_are_taken_first(line, livechat):
    line.post_events([text_event(f"U{n:032x}", f"m{n}") for n in range(40)])
    while relay.apply_line_inbox():  # the worker's intake, without its sends
        pass
    # U0's message has waited longest: its retry has been due for a minute.
    Message.objects.filter(body="m0").update(next_attempt_at=timezone.now() - timedelta(minutes=1))
    # A worker's look takes 32 users' heads (4 x its 8 sends), not all 40.
    heads = delivery.due_heads(delivery.WORKER_ROUTES, limit=32)
    assert len(heads) == 32 and "m0" in [head.body for head in heads]


def test_two_workers_never_send_a_row_twice(api, livechat, drain):
    sessions = []
    for n in range(4):
        api.call("/init", {"line_id": f"U{n}"})
        sessions.append(ChatSession.objects.get(line_id=f"U{n}"))
    for i in range(10):
        for n in range(4):
            api.call("/send", {"line_id": f"U{n}", "message": f"U{n}-{i}"})

    stop = threading.Event()
    threads = [
        threading.Thread(target=delivery.work, args=(stop,), kwargs={"threads": 3})
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: not Message.objects.filter(status=Message.Status.PENDING).exists(), 30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert len(livechat.calls_to("send_event")) == 40
    for n, session in enumerate(sessions):
        assert chat_texts(livechat, session) == [f"U{n}-{i}" for i in range(10)]


def test_two_worker_processes_never_send_a_row_twice(api, livechat, worker_process):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    for i in range(20):
        api.call("/send", {"line_id": "U1", "message": f"m{i}"})
    worker_process()
    worker_process()
    wait_until(lambda: not Message.objects.filter(status=Message.Status.PENDING).exists(), 30)
    assert chat_texts(livechat, session) == [f"m{i}" for i in range(20)]
    assert len(livechat.calls_to("send_event")) == 20


def test_a_revoked_refresh_token_holds_messages_until_livechat_is_connected_again(
    api, livechat, session, live_server
):
    api.call("/send", {"line_id": "U1", "message": "before"})
    delivery.run_once()
    # An administrator revokes the app's access (or another deployment spent the refresh token):
    # every token the bridge holds is dead and its refresh token is refused.
    livechat.expire_tokens()
    livechat.valid_refresh_token = "not-the-bridges"
    api.call("/send", {"line_id": "U1", "message": "while disconnected"})
    api.call("/send", {"line_id": "U1", "message": "after that"})
    for _ in range(3):
        delivery.run_once()
        Message.objects.filter(status=Message.Status.PENDING).update(next_attempt_at=timezone.now())
    waiting = Message.objects.get(body="while disconnected")
    assert waiting.status == Message.Status.PENDING
    assert "connect" in waiting.last_error and "refused" in waiting.last_error
    # The refused token is asked for once, not at every attempt.
    assert len([c for c in livechat.calls_to("token") if c.status != 200]) == 1
    health = requests.get(f"{live_server.url}/healthz", timeout=5).json()["livechat"]
    assert health["credentials"] == "refused" and health["usable"] is False

    livechat.valid_refresh_token = "granted-again"
    call_command("livechat_connect", "--refresh-token", "granted-again", stdout=io.StringIO())
    wait_until(lambda: delivery.run_once() == 0 and not pending(), 10)
    assert chat_texts(livechat, session) == ["before", "while disconnected", "after that"]
    health = requests.get(f"{live_server.url}/healthz", timeout=5).json()["livechat"]
    assert health["credentials"] == "access_token" and health["usable"] is True


def test_a_wrong_app_secret_holds_messages_until_it_is_corrected(api, livechat, session, settings):
    api.call("/send", {"line_id": "U1", "message": "before"})
    delivery.run_once()
    livechat.expire_tokens()
    real_secret, settings.LIVECHAT_CLIENT_SECRET = settings.LIVECHAT_CLIENT_SECRET, "rotated-away"
    api.call("/send", {"line_id": "U1", "message": "while misconfigured"})
    delivery.run_once()
    waiting = Message.objects.get(body="while misconfigured")
    assert waiting.status == Message.Status.PENDING
    assert "LIVECHAT_CLIENT_SECRET" in waiting.last_error

    settings.LIVECHAT_CLIENT_SECRET = real_secret  # the operator corrects the config var
    wait_until(lambda: delivery.run_once() == 0 and not pending(), 10)
    assert chat_texts(livechat, session) == ["before", "while misconfigured"]


def test_backoff_after_thousands_of_attempts_is_the_ceiling_not_an_error(settings):
    settings.DELIVERY_BACKOFF_MAX = 300.0
    assert 150.0 <= delivery.backoff_seconds(5000) <= 300.0


def test_backoff_doubles_from_the_base_with_jitter_in_the_upper_half(settings):
    settings.DELIVERY_BACKOFF_BASE, settings.DELIVERY_BACKOFF_MAX = 2.0, 300.0
    # After the first attempt 1-2 s (DELIVERY_BACKOFF_BASE), then 2-4 s, 4-8 s, ... up to 300.
    for attempts, (low, high) in {1: (1, 2), 2: (2, 4), 3: (4, 8), 9: (150, 300)}.items():
        delays = [delivery.backoff_seconds(attempts) for _ in range(100)]
        assert all(low <= delay <= high for delay in delays), (attempts, min(delays), max(delays))
        assert max(delays) - min(delays) > (high - low) / 2  # spread: not all back at once
