"""Long polls under gunicorn: they never keep LINE's webhooks waiting long for a thread, with more
pull clients polling in a loop than it has threads, and one whose client has gone hands out
nothing."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from sessions_app.models import ChatSession, InboundEvent
from sessions_app.thread_budget import GIVE_WAY_INTERVAL
from tests.conftest import BridgeAPI


def test_waiting_polls_give_a_thread_to_a_line_webhook(line, livechat, web_process):
    url = web_process(WEB_CONCURRENCY="1", GUNICORN_THREADS="2")
    line.webhook_url = f"{url}/line/webhook"
    clients = {line_id: BridgeAPI(url) for line_id in ("U1", "U2", "U3")}
    for line_id, client in clients.items():
        assert client.call("/init", {"line_id": line_id})["type"] == "ok"

    stop = threading.Event()
    answers: list[tuple[dict, float]] = []

    def poll_forever(line_id: str) -> None:
        # As the earlier bridge's clients do: poll, and poll again as soon as it answers.
        while not stop.is_set():
            started = time.monotonic()
            body = clients[line_id].call("/messages", {"line_id": line_id, "wait": 8})
            answers.append((body, time.monotonic() - started))

    pollers = [threading.Thread(target=poll_forever, args=(line_id,)) for line_id in clients]
    began = time.monotonic()
    for thread in pollers:
        thread.start()
    time.sleep(1.5)  # both threads hold a poll, the third client's poll is queued: polls rotate

    started = time.monotonic()
    event = line.text_event("U" + "9" * 32, "is anyone there?")
    status, _ = line.post_events([event], timeout=20)
    answered_in = time.monotonic() - started
    stop.set()
    for thread in pollers:
        thread.join(20)
    polled_for = time.monotonic() - began

    assert status == 200
    assert answered_in < 2.0  # LINE's deadline, with a poll queued ahead of the webhook
    assert InboundEvent.objects.filter(event_id=event["webhookEventId"]).exists()
    # Polls that gave way answered "nothing yet", as at the end of their wait...
    early = [body for body, took in answers if took < 7]
    assert early and all(body == {"type": "ok", "message": ""} for body in early)
    # ...at a bounded rate: the clients were not made to spin.
    assert len(answers) <= polled_for / GIVE_WAY_INTERVAL + len(clients)


def test_a_poll_whose_client_gave_up_hands_nothing_out(livechat, web_process):
    url = web_process()
    livechat.webhook_url = f"{url}/livechat/webhook"
    client = BridgeAPI(url)
    assert client.call("/init", {"line_id": "U1"})["type"] == "ok"
    chat_id = ChatSession.objects.get(line_id="U1").chat_id

    with pytest.raises(requests.Timeout):  # the client stops waiting after 1 s of a 3 s poll
        client.http.post(f"{url}/messages", json={"line_id": "U1", "wait": 3}, timeout=1)
    livechat.agent_says(chat_id, "the answer")  # while that poll would still be waiting
    time.sleep(0.5)  # it would have looked several times by now

    assert client.call("/messages", {"line_id": "U1", "wait": 5}) == {
        "type": "message",
        "message": "the answer",
    }
