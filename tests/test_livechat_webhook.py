"""LiveChat → bridge: checked, deduplicated, and turned into what /messages hands out."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from sessions_app.models import ChatSession, InboundEvent, Message

SEED_CHAT_STARTED = {
    "event_type": "chat_started",
    "event_unique_id": "7ddaabb",
    "token": None,
    "license_id": "1067",
    "lc_version": "2",
    "chat": {
        "id": "PO13",
        "started_timestamp": 1552126412,
        "url": "URL",
        "referer": "",
        "messages": [
            {
                "user_type": "agent",
                "author_name": "NAME",
                "agent_id": "name@gmail.com",
                "text": "Hello. How may I help you?",
                "json": "",
                "timestamp": 1552126412,
            }
        ],
        "attachments": [],
        "events": [],
        "agents": [{"name": "AGENT NAME", "login": "name@gmail.com"}],
        "tags": [],
        "groups": [0],
    },
    "visitor": {"id": "S1551", "name": "NAME", "email": "name@gmail.com", "language": "en"},
    "pre_chat_survey": [{"id": "2001", "type": "name", "label": "Name:", "answer": "NAME"}],
}


@pytest.fixture
def opened(api, livechat) -> ChatSession:
    api.call("/init", {"line_id": "U1", "display_name": "Taro"})
    return ChatSession.objects.get(line_id="U1")


def test_duplicate_webhook_produces_one_message(api, livechat, opened):
    envelope = livechat.agent_says(opened.chat_id, "only once")
    assert livechat.post_webhook(envelope) == 200
    assert livechat.post_webhook(envelope) == 200
    assert Message.objects.filter(body="only once").count() == 1
    assert api.call("/messages", {"line_id": "U1", "wait": 1})["message"] == "only once"
    assert api.call("/messages", {"line_id": "U1", "wait": 0.1}) == {"type": "ok", "message": ""}


def test_an_agent_message_redelivered_much_later_is_still_not_sent_twice(api, livechat, opened):
    # It has an id of its own (payload.event.id): unlike an id-less event read again, it can only
    # be the same message, however late it comes.
    envelope = livechat.agent_says(opened.chat_id, "only once, ever")
    assert api.call("/messages", {"line_id": "U1", "wait": 1})["message"] == "only once, ever"
    InboundEvent.objects.update(received_at=timezone.now() - timedelta(hours=1))
    assert livechat.post_webhook(envelope) == 200
    assert api.call("/messages", {"line_id": "U1", "wait": 0.3}) == {"type": "ok", "message": ""}
    assert Message.objects.filter(body="only once, ever").count() == 1


def test_wrong_secret_changes_nothing(api, livechat, opened):
    envelope = livechat.agent_says(opened.chat_id, "first")
    forged = copy.deepcopy(envelope)
    forged["payload"]["event"]["id"] = "forged_1"
    forged["payload"]["event"]["text"] = "forged"
    before = (Message.objects.count(), InboundEvent.objects.count())
    assert livechat.post_webhook(forged, secret_key="wrong") == 403
    del forged["secret_key"]
    response = requests.post(livechat.webhook_url, json=forged, timeout=5)
    assert response.status_code == 403
    assert (Message.objects.count(), InboundEvent.objects.count()) == before
    assert not Message.objects.filter(body="forged").exists()


def test_malformed_webhook_is_a_clear_400(live_server, livechat):
    url = livechat.webhook_url
    assert requests.post(url, data=b"{nope", timeout=5).status_code == 400
    assert requests.post(url, json=[1], timeout=5).status_code == 400
    # Anyone can send this one, before any secret is checked: a 400, not a 500 and a traceback.
    deep = b"[" * 100_000 + b"]" * 100_000
    assert requests.post(url, data=deep, timeout=5).status_code == 400
    response = requests.post(url, json={"secret_key": livechat.webhook_secret}, timeout=5)
    assert response.status_code == 400
    assert not InboundEvent.objects.exists()


def test_unconfigured_secret_refuses_every_webhook(api, livechat, opened, settings):
    settings.LIVECHAT_WEBHOOK_SECRET = ""
    envelope = livechat.agent_says(opened.chat_id, "hello")
    assert livechat.post_webhook(envelope, secret_key="") == 403
    assert not Message.objects.filter(body="hello").exists()


def test_internal_notes_and_the_customers_own_events_are_not_relayed(api, livechat, opened, drain):
    livechat.agent_says(opened.chat_id, "note for colleagues", visibility="agents")
    api.call("/send", {"line_id": "U1", "message": "from the user"})
    drain()
    # LiveChat echoes the customer's event back through incoming_event.
    thread = livechat.chats[opened.chat_id]["threads"][-1]
    own = next(e for e in thread["events"] if e.get("text") == "from the user")
    livechat.post_webhook(
        livechat.make_envelope(
            "incoming_event", {"chat_id": opened.chat_id, "thread_id": thread["id"], "event": own}
        )
    )
    assert api.call("/messages", {"line_id": "U1", "wait": 0.2}) == {"type": "ok", "message": ""}


def test_what_the_customer_wrote_elsewhere_is_not_sent_back_to_them(api, livechat, opened):
    # The customer's own event without the bridge's custom_id (e.g. a file the bridge uploaded,
    # or a future client): known by its author.
    thread = livechat.chats[opened.chat_id]["threads"][-1]["id"]
    own = {
        "id": f"{thread}_99",
        "type": "message",
        "text": "mine, not the agent's",
        "author_id": opened.customer_id,
        "visibility": "all",
        "created_at": "2026-12-03T08:00:00.000000Z",
    }
    livechat.post_webhook(
        livechat.make_envelope(
            "incoming_event", {"chat_id": opened.chat_id, "thread_id": thread, "event": own}
        )
    )
    assert api.call("/messages", {"line_id": "U1", "wait": 0.2}) == {"type": "ok", "message": ""}
    assert InboundEvent.objects.get(event_id=own["id"]).outcome == "own event"


def test_agent_joined_and_transfer_are_status_notices(api, livechat, opened):
    livechat.agent_joins(opened.chat_id, name="Agent Smith")
    item = api.call("/messages", {"line_id": "U1", "wait": 1})
    assert item["type"] == "ok" and "Agent Smith" in item["message"]
    livechat.transfer(opened.chat_id)
    item = api.call("/messages", {"line_id": "U1", "wait": 1})
    assert item["type"] == "ok" and item["message"]
    opened.refresh_from_db()
    assert opened.state in {ChatSession.State.QUEUED, ChatSession.State.OPEN}


def test_a_customer_added_to_the_chat_is_not_announced_as_an_agent(api, livechat, opened):
    # user_added_to_chat is sent for any user: here the customer (the LINE user) itself.
    thread = livechat.chats[opened.chat_id]["threads"][-1]["id"]
    user = {"id": opened.customer_id, "type": "customer", "name": "Taro"}
    envelope = livechat.make_envelope(
        "user_added_to_chat",
        {"chat_id": opened.chat_id, "thread_id": thread, "user": user, "reason": "manual"},
    )
    assert livechat.post_webhook(envelope) == 200
    assert api.call("/messages", {"line_id": "U1", "wait": 0.3}) == {"type": "ok", "message": ""}
    opened.refresh_from_db()
    assert opened.agent_name == "" and opened.state != ChatSession.State.WITH_AGENT


def test_the_same_agent_joining_the_next_thread_is_announced_again(api, livechat, opened, drain):
    livechat.agent_joins(opened.chat_id, name="Agent Smith")
    assert "Agent Smith" in api.call("/messages", {"line_id": "U1", "wait": 1})["message"]
    livechat.agent_ends_chat(opened.chat_id)
    assert api.call("/messages", {"line_id": "U1", "wait": 1})["type"] == "end"
    api.call("/send", {"line_id": "U1", "message": "one more thing"})
    drain()  # the chat is resumed: a new thread, nobody in it yet
    livechat.agent_joins(opened.chat_id, name="Agent Smith")
    assert "Agent Smith" in api.call("/messages", {"line_id": "U1", "wait": 1})["message"]


def test_an_agent_added_back_later_is_announced_again_but_a_redelivery_is_not(
    api, livechat, opened
):
    # user_added_to_chat has no id of its own: the bridge knows a redelivery by its payload.
    first = livechat.agent_joins(opened.chat_id, agent_id="a@example.com", name="Agent A")
    assert "Agent A" in api.call("/messages", {"line_id": "U1", "wait": 1})["message"]
    livechat.agent_joins(opened.chat_id, agent_id="b@example.com", name="Agent B")
    assert "Agent B" in api.call("/messages", {"line_id": "U1", "wait": 1})["message"]
    assert livechat.post_webhook(first) == 200  # LiveChat retrying within its minute
    assert api.call("/messages", {"line_id": "U1", "wait": 0.3}) == {"type": "ok", "message": ""}

    # A quarter of an hour later the chat is handed back to Agent A: the same payload, a new event.
    InboundEvent.objects.update(received_at=timezone.now() - timedelta(minutes=15))
    assert livechat.post_webhook(first) == 200
    assert "Agent A" in api.call("/messages", {"line_id": "U1", "wait": 1})["message"]
    opened.refresh_from_db()
    assert opened.agent_name == "Agent A"
    assert livechat.post_webhook(first) == 200  # and that one's own redelivery is dropped
    assert api.call("/messages", {"line_id": "U1", "wait": 0.3}) == {"type": "ok", "message": ""}
    joins = InboundEvent.objects.filter(event_type="user_added_to_chat")
    assert sorted(joins.values_list("outcome", flat=True)) == ["agent joined"] * 3


def test_a_transfer_into_a_queue_gives_the_position_and_the_chat_shows_as_queued(
    api, livechat, opened
):
    livechat.transfer(opened.chat_id, queue={"position": 4, "wait_time": 120})
    assert "4" in api.call("/messages", {"line_id": "U1", "wait": 1})["message"]
    opened.refresh_from_db()
    assert opened.state == ChatSession.State.QUEUED  # what the admin's state filter shows
    livechat.transfer(opened.chat_id, group_ids=[0])  # taken straight to a group with room
    assert api.call("/messages", {"line_id": "U1", "wait": 1})["message"]
    opened.refresh_from_db()
    assert opened.state == ChatSession.State.OPEN


def test_a_transfer_of_an_ended_chat_neither_reopens_it_nor_tells_the_user(api, livechat, opened):
    livechat.agent_ends_chat(opened.chat_id)
    assert api.call("/messages", {"line_id": "U1", "wait": 1})["type"] == "end"
    livechat.transfer(opened.chat_id)  # e.g. an archived chat moved to another group
    assert api.call("/messages", {"line_id": "U1", "wait": 0.5}) == {"type": "ok", "message": ""}
    opened.refresh_from_db()
    assert opened.state == ChatSession.State.ENDED


def test_events_of_unknown_chats_are_recorded_not_failed(live_server, livechat):
    status = livechat.post_webhook(
        livechat.make_envelope(
            "incoming_event",
            {
                "chat_id": "NOPE",
                "thread_id": "T",
                "event": {"id": "T_1", "type": "message", "text": "?", "author_id": "a@b.c"},
            },
        )
    )
    assert status == 200
    record = InboundEvent.objects.get()
    assert record.outcome == "unknown chat" and record.applied_at is not None
    assert "secret_key" not in record.payload  # checked, never kept
    assert not Message.objects.exists()


@pytest.mark.parametrize("event_type", ["chat_started", "chat_ended", "ticket_created"])
def test_legacy_v2_payloads_are_accepted_with_the_secret_as_token(
    live_server, livechat, event_type
):
    body = copy.deepcopy(SEED_CHAT_STARTED)
    body["event_type"] = event_type
    body["token"] = livechat.webhook_secret
    response = requests.post(livechat.webhook_url, json=body, timeout=5)
    assert response.status_code == 200
    assert requests.post(livechat.webhook_url, json=body, timeout=5).status_code == 200
    record = InboundEvent.objects.get()
    assert record.source == InboundEvent.Source.LIVECHAT_LEGACY
    assert record.event_type == event_type
    assert "token" not in record.payload

    body["token"] = "f791db42"  # the seed's own token: an old credential, not ours
    body["event_unique_id"] = "other"
    assert requests.post(livechat.webhook_url, json=body, timeout=5).status_code == 403
    assert InboundEvent.objects.count() == 1


def test_legacy_chat_ended_ends_a_known_chat(api, livechat, opened):
    body = copy.deepcopy(SEED_CHAT_STARTED)
    body.update(event_type="chat_ended", token=livechat.webhook_secret)
    body["chat"]["id"] = opened.chat_id
    assert requests.post(livechat.webhook_url, json=body, timeout=5).status_code == 200
    assert api.call("/messages", {"line_id": "U1", "wait": 1})["type"] == "end"


def test_a_legacy_chat_ended_for_a_chat_already_ended_tells_the_user_nothing_more(
    api, livechat, opened
):
    livechat.agent_ends_chat(opened.chat_id)  # the 3.6 chat_deactivated
    assert api.call("/messages", {"line_id": "U1", "wait": 1})["type"] == "end"
    body = copy.deepcopy(SEED_CHAT_STARTED)  # and a v2 webhook still registered says so again
    body.update(event_type="chat_ended", token=livechat.webhook_secret)
    body["chat"]["id"] = opened.chat_id
    assert requests.post(livechat.webhook_url, json=body, timeout=5).status_code == 200
    assert api.call("/messages", {"line_id": "U1", "wait": 0.3}) == {"type": "ok", "message": ""}
