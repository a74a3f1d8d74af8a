"""Long polls never keep LINE's webhooks waiting for a thread: the bridge under gunicorn, with
fewer threads than waiting pull clients."""

from __future__ import annotations

import threading
import time

from sessions_app.models import InboundEvent
from tests.conftest import BridgeAPI


def test_waiting_polls_give_a_thread_to_a_line_webhook(line, livechat, web_process):
    url = web_process(WEB_CONCURRENCY="1", GUNICORN_THREADS="2")
    line.webhook_url = f"{url}/line/webhook"
    clients = {line_id: BridgeAPI(url) for line_id in ("U1", "U2")}
    for line_id, client in clients.items():
        assert client.call("/init", {"line_id": line_id})["type"] == "ok"

    answers: dict[str, tuple[dict, float]] = {}

    def poll(line_id: str) -> None:
        started = time.monotonic()
        body = clients[line_id].call("/messages", {"line_id": line_id, "wait": 8})
        answers[line_id] = (body, time.monotonic() - started)

    polls = [threading.Thread(target=poll, args=(line_id,)) for line_id in clients]
    for thread in polls:
        thread.start()
    time.sleep(0.5)  # both threads of the process now hold a waiting poll

    started = time.monotonic()
    event = line.text_event("U" + "9" * 32, "is anyone there?")
    status, _ = line.post_events([event], timeout=20)
    answered_in = time.monotonic() - started

    assert status == 200
    assert answered_in < 2.0  # LINE's deadline
    assert InboundEvent.objects.filter(event_id=event["webhookEventId"]).exists()
    # The poll that gave way answered "nothing yet", as at the end of its wait, long before it.
    for thread in polls:
        thread.join(30)
    early = [body for body, took in answers.values() if took < 4]
    assert early and all(body == {"type": "ok", "message": ""} for body in early)
