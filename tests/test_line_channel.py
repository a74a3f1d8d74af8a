"""A LINE user writes to the official account, an agent answers in LiveChat, the answer arrives in
LINE: over real HTTP, with the fakes checking what the real platforms check."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from sessions_app import delivery, relay
from sessions_app.models import ChatSession, InboundEvent, Message
from tests.conftest import drain_in_background, wait_until
from tests.fakes.line import (
    base_event,
    follow_event,
    redelivered,
    sign,
    text_event,
    unfollow_event,
    unsend_event,
)

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "line").glob("*.json"))
USER = "U" + "1" * 32


MONTHLY_LIMIT = "You have reached your monthly limit."


def chat_texts(livechat, session: ChatSession) -> list[str]:
    chat = livechat.chats[session.chat_id]
    return [e["text"] for t in chat["threads"] for e in t["events"] if e["type"] == "message"]


def session_of(user_id: str = USER) -> ChatSession:
    return ChatSession.objects.get(line_id=user_id)


@pytest.fixture
def profile(line):
    line.profiles[USER] = {
        "displayName": "Hanako",
        "userId": USER,
        "pictureUrl": "https://profile.line-scdn.net/abc",
        "language": "en",
    }
    return line.profiles[USER]


def test_round_trip_line_to_livechat_and_back(line, livechat, drain, profile):
    status, _ = line.post_events([text_event(USER, "Hello, is anyone there?")])
    assert status == 200
    drain()
    session = session_of()
    assert chat_texts(livechat, session) == ["Hello, is anyone there?"]
    customer = livechat.customers[session.customer_id]
    assert customer["name"] == "Hanako"
    assert customer["avatar"] == "https://profile.line-scdn.net/abc"
    assert {"line_id": USER} in customer["session_fields"]

    livechat.agent_says(session.chat_id, "Hi Hanako, how can I help?")
    drain()
    assert line.texts_for(USER) == ["Hi Hanako, how can I help?"]

    livechat.agent_ends_chat(session.chat_id)
    drain()
    assert line.texts_for(USER)[-1] == "The chat has ended."  # the profile says English
    pushes = line.calls_to("/v2/bot/message/push")
    assert all(c.headers.get("x-line-retry-key") for c in pushes)
    assert len({c.headers["x-line-retry-key"] for c in pushes}) == len(pushes)


def test_japanese_is_the_default_language(line, livechat, drain):
    line.post_events([text_event(USER, "こんにちは")])
    drain()
    livechat.agent_ends_chat(session_of().chat_id)
    drain()
    assert line.texts_for(USER) == ["接続が終了しました。"]


def test_second_message_resumes_an_ended_chat(line, livechat, drain, profile):
    line.post_events([text_event(USER, "first")])
    drain()
    session = session_of()
    livechat.agent_ends_chat(session.chat_id)
    line.post_events([text_event(USER, "again")])
    drain()
    threads = livechat.chats[session.chat_id]["threads"]
    assert len(threads) == 2 and [e["text"] for e in threads[1]["events"]] == ["again"]
    assert len(livechat.customers) == 1


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_every_documented_payload_is_accepted(line, livechat, drain, fixture):
    body = fixture.read_bytes()
    status, answer = line.post_events([], raw_body=body)
    assert status == 200, answer
    events = json.loads(body)["events"]
    assert InboundEvent.objects.filter(source="line").count() == len(
        {e["webhookEventId"] for e in events}
    )
    drain()
    assert not Message.objects.filter(status=Message.Status.FAILED).exists()
    for event in events:
        if event["type"] == "message" and event["source"]["type"] == "user":
            session = session_of(event["source"]["userId"])
            texts = chat_texts(livechat, session)
            assert texts and all(texts), texts  # something readable for every message type


def test_non_text_messages_reach_the_agent_as_readable_placeholders(line, livechat, drain):
    sticker = text_event(
        USER,
        "",
        message={
            "type": "sticker",
            "text": None,
            "packageId": "446",
            "stickerId": "1988",
            "stickerResourceType": "STATIC",
            "keywords": ["happy", "smile"],
        },
    )
    location = text_event(
        USER,
        "",
        message={
            "type": "location",
            "text": None,
            "title": "Tokyo Tower",
            "address": "Minato, Tokyo",
            "latitude": 35.65,
            "longitude": 139.74,
        },
    )
    image = text_event(
        USER, "", message={"type": "image", "text": None, "contentProvider": {"type": "line"}}
    )
    line.post_events([sticker, location, image])
    drain()
    # Issue 4 made these richer: a sticker image link, a map link, and a note for an image
    # whose content LINE no longer has (the fake serves none for it).
    assert chat_texts(livechat, session_of()) == [
        "[sticker] happy, smile\n"
        "https://stickershop.line-scdn.net/stickershop/v1/sticker/1988/android/sticker.png",
        "[location] Tokyo Tower\nMinato, Tokyo\n"
        "https://www.google.com/maps/search/?api=1&query=35.65,139.74",
        "[image] (no longer available on LINE)",
    ]


def test_the_fake_line_refuses_what_line_refuses(line):
    # So that a test passes only when the bridge calls LINE as LINE wants to be called.
    auth = {"Authorization": f"Bearer {line.channel_access_token}"}
    push = {"to": USER, "messages": [{"type": "text", "text": "hi"}]}
    url = f"{line.base_url}/v2/bot/message/push"
    plain = {**auth, "Content-Type": "text/plain"}
    assert requests.post(url, data=json.dumps(push), headers=plain, timeout=5).status_code == 415
    assert requests.post(url, json=push, timeout=5).status_code == 401
    assert requests.post(url, json=push, headers=auth, timeout=5).status_code == 200
    button = {"type": "action", "action": {"type": "message", "label": "x" * 21, "text": "x"}}
    quick = {
        **push,
        "messages": [{"type": "text", "text": "hi", "quickReply": {"items": [button]}}],
    }
    answer = requests.post(url, json=quick, headers=auth, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["details"][0]["property"] == "messages[0].quickReply.items[0].action.label"
    # Content is on the data host only.
    line.contents["1"] = (b"x", "image/jpeg")
    content = "/v2/bot/message/1/content"
    assert requests.get(line.base_url + content, headers=auth, timeout=5).status_code == 404
    assert requests.get(line.data_base_url + content, headers=auth, timeout=5).status_code == 200


def test_console_verify_with_no_events_answers_200(line):
    assert line.post_events([])[0] == 200
    assert not InboundEvent.objects.exists()


def test_the_webhook_answers_with_the_request_id_and_no_browser_state(line):
    body = json.dumps({"destination": "U0", "events": [text_event(USER, "hi")]}).encode()
    answer = requests.post(
        line.webhook_url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Line-Signature": sign(line.channel_secret, body),
            "X-Request-ID": "line-delivery-7",
        },
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json() == {}
    # The id Heroku's router logged, for operators to follow the delivery; a length, not chunks.
    assert answer.headers["X-Request-ID"] == "line-delivery-7"
    assert answer.headers["Content-Length"] == str(len(answer.content))
    assert "Set-Cookie" not in answer.headers
    assert InboundEvent.objects.filter(source="line").count() == 1


def test_the_webhook_takes_only_post(line):
    assert requests.get(line.webhook_url, timeout=10).status_code == 405
    assert not InboundEvent.objects.exists()


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl", None])
def test_wrong_or_missing_signature_stores_nothing(line, signature):
    body = json.dumps({"destination": "U0", "events": [text_event(USER, "forged")]}).encode()
    if signature is None:  # signed with another channel's secret
        signature = sign("another-secret", body)
    status, _ = line.post_events([], raw_body=body, signature=signature)
    assert status in (400, 403)
    assert not InboundEvent.objects.exists() and not Message.objects.exists()


@pytest.mark.parametrize("body", [b'{"events": [', b"[" * 100_000 + b"]" * 100_000])
def test_malformed_json_with_a_valid_signature_is_a_400(line, body):
    status, answer = line.post_events([], raw_body=body)
    assert status == 400 and b"malformed" in answer
    assert not InboundEvent.objects.exists()


def test_redelivered_and_duplicated_events_are_relayed_once(line, livechat, drain):
    event = text_event(USER, "once please")
    line.post_events([event])
    line.post_events([redelivered(event)])
    line.post_events([event, event])
    drain()
    assert chat_texts(livechat, session_of()) == ["once please"]
    assert InboundEvent.objects.filter(source="line").count() == 1


def test_events_are_relayed_in_timestamp_order_within_a_delivery(line, livechat, drain):
    now = int(time.time() * 1000)
    later = text_event(USER, "second", timestamp=now + 5)
    earlier = text_event(USER, "first", timestamp=now)
    line.post_events([later, earlier])
    drain()
    assert chat_texts(livechat, session_of()) == ["first", "second"]


def test_group_room_and_standby_events_are_recorded_not_relayed(line, livechat, drain):
    group = text_event(USER, "in a group", source={"type": "group", "groupId": "C" + "0" * 32})
    standby = text_event(USER, "standby", mode="standby")
    assert line.post_events([group, standby])[0] == 200
    drain()
    assert not Message.objects.exists()
    outcomes = set(InboundEvent.objects.values_list("outcome", flat=True))
    assert outcomes == {"ignored: group source", "ignored: standby"}


def test_a_message_in_a_multi_person_chat_is_recorded_not_relayed(line, livechat, drain):
    # A room (LINE's older multi-person chat) carries the speaker's userId, like a group: what
    # they say there is not a 1:1 conversation with the account.
    room = text_event(USER, "in a room", source={"type": "room", "roomId": "R" + "0" * 32})
    assert line.post_events([room])[0] == 200
    drain()
    assert not Message.objects.exists() and not livechat.calls
    assert InboundEvent.objects.get().outcome == "ignored: room source"


def test_a_delivery_of_more_events_than_one_intake_still_goes_in_timestamp_order(
    line, livechat, drain
):
    # The worker takes the inbox ten events at a time, oldest stored first: a delivery's events
    # must be stored in the order they happened, or its earliest would be applied last.
    now = int(time.time() * 1000)
    events = [text_event(USER, f"m{n:02}", timestamp=now + n) for n in range(12)]
    assert line.post_events(events[::-1])[0] == 200
    drain()
    assert chat_texts(livechat, session_of()) == [f"m{n:02}" for n in range(12)]


def test_webhook_answers_fast_while_livechat_is_slow(line, livechat, drain):
    livechat.slow("*", 3.0, times=10)
    started = time.monotonic()
    status, _ = line.post_events([text_event(USER, "quick")])
    assert status == 200
    assert time.monotonic() - started < 1.0
    assert not livechat.calls  # the webhook request itself never called a vendor


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_line_down_then_back_every_message_arrives_once_in_order(line, livechat, drain, status):
    line.post_events([text_event(USER, "hi")])
    drain()
    session = session_of()
    line.fail("/v2/bot/message/push", status=status, times=3)
    for n in range(3):
        livechat.agent_says(session.chat_id, f"answer {n}")
    drain()
    assert line.texts_for(USER) == ["answer 0", "answer 1", "answer 2"]


def test_line_rate_limit_then_back(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    session = session_of()
    line.fail("/v2/bot/message/push", status=429, times=2)
    livechat.agent_says(session.chat_id, "after the limit")
    drain()
    assert line.texts_for(USER) == ["after the limit"]
    row = Message.objects.get(body="after the limit")
    assert row.attempts == 3 and row.status == Message.Status.SENT


def test_at_lines_monthly_limit_replies_wait_and_the_operator_is_told_why(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    session = session_of()
    line.fail("/v2/bot/message/push", status=429, times=1000, message=MONTHLY_LIMIT)
    livechat.agent_says(session.chat_id, "the answer you waited for")

    def tried_twice() -> bool:
        delivery.run_once()
        return len(line.calls_to("/v2/bot/message/push")) >= 2

    wait_until(tried_twice)
    status = io.StringIO()
    call_command("bridge_status", stdout=status)
    (waiting,) = [row for row in status.getvalue().splitlines() if row.startswith("outbox")]
    assert waiting.startswith("outbox line_push: 1 waiting since")
    assert f"because: RetryableError: LINE HTTP 429 {MONTHLY_LIMIT}" in waiting
    assert line.texts_for(USER) == []

    line.clear_faults()  # the operator raised the plan's limit
    drain()
    assert line.texts_for(USER) == ["the answer you waited for"]
    status = io.StringIO()
    call_command("bridge_status", stdout=status)
    assert "outbox line_push" not in status.getvalue()


@pytest.mark.parametrize("texts", [["slow push"], ["one", "two"]], ids=["one", "batch"])
def test_a_push_whose_answer_timed_out_is_retried_whole_with_its_key_and_delivered_once(
    line, livechat, drain, settings, texts
):
    # LINE took the push but its answer was lost: the retry must be the same request under the
    # same key, not the head alone (which would send the second message again).
    line.post_events([text_event(USER, "hi")])
    drain()
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    line.slow("/v2/bot/message/push", 1.0)
    for text in texts:
        livechat.agent_says(session_of().chat_id, text)
    drain()
    time.sleep(1.0)  # let the slow answer finish on the fake's side
    assert line.texts_for(USER) == texts
    pushes = line.calls_to("/v2/bot/message/push")
    assert [len(c.body["messages"]) for c in pushes] == [len(texts)] * 2
    keys = [c.headers["x-line-retry-key"] for c in pushes]
    assert len(set(keys)) == 1
    assert [c.status for c in pushes][-1] == 409
    # The 409 lists the messages LINE sent the first time: each row keeps its id as if the first
    # answer had come.
    _, sent = line.accepted_retry_keys[keys[0]]
    rows = Message.objects.filter(body__in=texts).order_by("id")
    assert [(r.status, r.line_message_id) for r in rows] == [
        (Message.Status.SENT, m["id"]) for m in sent
    ]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_channel_token_holds_messages_until_it_is_replaced(
    line, livechat, drain, settings, status
):
    # 401: the channel access token was revoked or reissued; 403: the channel lost access. The
    # operator replaces the token: the messages wait for it instead of failing.
    line.post_events([text_event(USER, "hi")])
    drain()
    if status == 401:
        settings.LINE_CHANNEL_ACCESS_TOKEN = "revoked-token"
    else:
        line.fail("/v2/bot/message/push", status=403, times=3)
    livechat.agent_says(session_of().chat_id, "while refused")
    for _ in range(3):
        delivery.run_once()
        Message.objects.filter(status=Message.Status.PENDING).update(next_attempt_at=timezone.now())
    waiting = Message.objects.get(body="while refused")
    assert waiting.status == Message.Status.PENDING and str(status) in waiting.last_error
    assert line.texts_for(USER) == []

    settings.LINE_CHANNEL_ACCESS_TOKEN = line.channel_access_token
    drain()
    assert line.texts_for(USER) == ["while refused"]


def test_a_tls_failure_reaching_line_holds_the_message_until_it_connects(
    line, livechat, drain, settings
):
    # The SDK reports a failed TLS handshake as an ApiException without a status: an outage.
    line.post_events([text_event(USER, "hi")])
    drain()
    settings.LINE_API_BASE_URL = line.base_url.replace("http://", "https://")  # plain HTTP
    livechat.agent_says(session_of().chat_id, "after the handshake")
    delivery.run_once()
    waiting = Message.objects.get(body="after the handshake")
    assert waiting.status == Message.Status.PENDING and "SSL" in waiting.last_error

    settings.LINE_API_BASE_URL = line.base_url
    drain()
    assert line.texts_for(USER) == ["after the handshake"]


def test_queued_agent_messages_are_batched_five_per_push(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    session = session_of()
    for n in range(7):
        livechat.agent_says(session.chat_id, f"part {n}")
    drain()
    assert line.texts_for(USER) == [f"part {n}" for n in range(7)]
    assert [len(c.body["messages"]) for c in line.calls_to("/v2/bot/message/push")] == [5, 2]


def test_long_agent_text_is_split_at_5000_utf16_units(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    text = "😀" * 2600 + "end"  # 5,203 UTF-16 units
    livechat.agent_says(session_of().chat_id, text)
    drain()
    received = line.texts_for(USER)
    assert len(received) == 2 and "".join(received) == text


@pytest.mark.parametrize(
    ("text", "messages"), [("a" * 5000, 1), ("a" * 4999 + "😀", 2), ("😀" * 2500, 1)]
)
def test_a_text_of_exactly_5000_utf16_units_is_one_message(line, livechat, drain, text, messages):
    line.post_events([text_event(USER, "hi")])
    drain()
    livechat.agent_says(session_of().chat_id, text)
    drain()
    received = line.texts_for(USER)
    assert len(received) == messages and "".join(received) == text


def test_an_agent_text_longer_than_one_push_arrives_whole(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    text = "".join(chr(ord("a") + n % 26) for n in range(26000))  # more than 5 messages of 5,000
    livechat.agent_says(session_of().chat_id, text)
    drain()
    assert "".join(line.texts_for(USER)) == text
    pushes = line.calls_to("/v2/bot/message/push")
    assert [len(c.body["messages"]) for c in pushes] == [5, 1]
    assert len({c.headers["x-line-retry-key"] for c in pushes}) == 2


def test_an_agents_rich_message_reaches_the_user_as_its_words(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    card = {
        "title": "Opening hours",
        "subtitle": "Mon-Fri 9:00-18:00",
        "image": {"url": "https://cdn.example.com/shop.png", "name": "shop.png"},
        "buttons": [
            {"text": "Book a visit", "type": "url", "value": "https://example.com/book"},
            {"text": "Talk to us", "type": "message", "value": "talk"},
        ],
    }
    picture_only = {"image": {"url": "https://cdn.example.com/map.png"}}
    livechat.agent_sends_rich_message(session_of().chat_id, [card, picture_only])
    drain()
    assert line.texts_for(USER) == [
        "Opening hours\nMon-Fri 9:00-18:00\nhttps://cdn.example.com/shop.png\n"
        "- Book a visit: https://example.com/book\n- Talk to us\n"
        "https://cdn.example.com/map.png"
    ]


def test_an_agents_quick_replies_are_buttons_the_user_taps_to_answer(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    long_answer = "Another question about my order"  # 31 characters: too long for a label
    buttons = [
        {"text": "Yes", "type": "message", "value": "yes", "postback_id": "p1", "user_ids": []},
        {"text": "No, I need more help", "type": "message", "value": "no"},  # 20: fits
        {"text": "Read the FAQ", "type": "url", "value": "https://example.com/faq"},
        {"text": long_answer, "type": "message", "value": "more"},
        {"text": "Yes", "type": "message", "value": "yes-again"},
    ]
    livechat.agent_sends_rich_message(
        session_of().chat_id,
        [{"title": "Did that answer it?", "buttons": buttons}],
        template_id="quick_replies",
    )
    drain()
    [message] = line.received[USER]
    # The options stay in the text too: LINE for PC shows no quick replies.
    assert message["text"].startswith("Did that answer it?\n- Yes\n- No, I need more help\n")
    assert [item["action"] for item in message["quickReply"]["items"]] == [
        {"type": "message", "label": "Yes", "text": "Yes"},
        {"type": "message", "label": "No, I need more help", "text": "No, I need more help"},
        {"type": "message", "label": "Another question ab…", "text": long_answer},
    ]
    # A tap makes LINE send the button's text as the user's message, which reaches the agent.
    line.post_events([text_event(USER, long_answer)])
    drain()
    assert chat_texts(livechat, session_of())[-1] == long_answer


def test_quick_replies_go_with_a_long_messages_last_part_at_most_13_each_one_line_can_send(
    line, livechat, drain
):
    line.post_events([text_event(USER, "hi")])
    drain()
    buttons = [{"text": "x" * 301, "type": "message"}]  # more than a tap may send
    buttons += [{"text": f"Option {n}", "type": "message"} for n in range(1, 16)]
    livechat.agent_sends_rich_message(
        session_of().chat_id,
        [{"title": "a" * 6000, "buttons": buttons}],
        template_id="quick_replies",
    )
    drain()
    first, last = line.received[USER]
    assert "quickReply" not in first
    labels = [item["action"]["label"] for item in last["quickReply"]["items"]]
    assert labels == [f"Option {n}" for n in range(1, 14)]


def test_long_choices_that_begin_alike_get_labels_the_user_can_tell_apart(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    choices = [
        "I would like to change my delivery address",
        "I would like to change my delivery date",
        "I would like to cancel the whole order",
    ]
    livechat.agent_sends_rich_message(
        session_of().chat_id,
        [
            {
                "title": "How can we help?",
                "buttons": [{"text": c, "type": "message"} for c in choices],
            }
        ],
        template_id="quick_replies",
    )
    drain()
    [message] = line.received[USER]
    assert [item["action"] for item in message["quickReply"]["items"]] == [
        {"type": "message", "label": "I would l…ry address", "text": choices[0]},
        {"type": "message", "label": "I would l…ivery date", "text": choices[1]},
        {"type": "message", "label": "I would like to can…", "text": choices[2]},
    ]


def test_an_agents_quick_replies_reach_a_json_api_user_as_the_words_alone(api, livechat, drain):
    api.call("/init", {"line_id": "U-api"})
    session = ChatSession.objects.get(line_id="U-api")
    drain()
    livechat.agent_sends_rich_message(
        session.chat_id,
        [{"title": "Pick one", "buttons": [{"text": "Yes", "type": "message"}]}],
        template_id="quick_replies",
    )
    assert api.call("/messages", {"line_id": "U-api", "wait": 2}) == {
        "type": "message",
        "message": "Pick one\n- Yes",
    }


def test_each_agent_message_of_a_push_keeps_its_own_line_message_id(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    livechat.agent_says(session_of().chat_id, "a" * 6000)  # two LINE messages
    livechat.agent_says(session_of().chat_id, "short")
    drain()
    (push,) = line.calls_to("/v2/bot/message/push")
    _, sent = line.accepted_retry_keys[push.headers["x-line-retry-key"]]
    assert len(sent) == 3
    long_row, short_row = Message.objects.filter(
        direction=Message.Direction.TO_USER, kind=Message.Kind.TEXT
    ).order_by("id")
    assert long_row.line_message_id == sent[0]["id"]
    assert short_row.line_message_id == sent[2]["id"]


def test_permanent_line_error_is_recorded_with_its_cause(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    line.fail("/v2/bot/message/push", status=400, times=2, message="Invalid message")
    livechat.agent_says(session_of().chat_id, "rejected")
    livechat.agent_says(session_of().chat_id, "next")
    drain()
    failed = Message.objects.get(body="rejected")
    assert failed.status == Message.Status.FAILED and "400" in failed.last_error
    assert line.texts_for(USER) == ["next"]


def test_livechat_down_then_back_every_message_arrives_once_in_order(line, livechat, drain):
    livechat.fail("*", status=503, times=4)
    for n in range(3):
        line.post_events([text_event(USER, f"question {n}")])
    drain()
    assert chat_texts(livechat, session_of()) == [f"question {n}" for n in range(3)]


def test_a_first_message_whose_chat_start_went_unanswered_still_reaches_the_agent(
    line, livechat, drain, settings
):
    # LiveChat started nothing and its answer never came: the retry finds no chat of the
    # user's, so it starts one; the message is not taken as delivered.
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    livechat.fail("start_chat", delay=1.0)
    line.post_events([text_event(USER, "hello?")])
    drain()
    time.sleep(1.0)  # let the slow answer finish on the fake's side
    assert chat_texts(livechat, session_of()) == ["hello?"]
    assert Message.objects.get(body="hello?").livechat_event_id


def test_worker_killed_mid_push_delivers_once_after_restart(line, livechat, drain, worker_process):
    line.post_events([text_event(USER, "hi")])
    drain()
    line.slow("/v2/bot/message/push", 3.0)
    livechat.agent_says(session_of().chat_id, "survives a crash")
    first = worker_process(DELIVERY_LEASE_SECONDS="2")
    wait_until(lambda: line.calls_to("/v2/bot/message/push"), timeout=20)
    first.send_signal(signal.SIGKILL)
    first.wait(5)
    worker_process(DELIVERY_LEASE_SECONDS="2")
    wait_until(
        lambda: Message.objects.get(body="survives a crash").status == Message.Status.SENT, 30
    )
    assert line.texts_for(USER) == ["survives a crash"]


def test_unfollow_ends_the_open_chat(line, livechat, drain):
    livechat.echo_customer_events = True  # the end comes back as a webhook, as LiveChat sends it
    line.post_events([text_event(USER, "hi")])
    drain()
    session = session_of()
    pushed = len(line.calls_to("/v2/bot/message/push"))
    line.blocked(USER)
    line.post_events([unfollow_event(USER)])
    drain()
    assert not livechat.chats[session.chat_id]["threads"][-1]["active"]
    # The agent is told why, before the chat ends.
    assert chat_texts(livechat, session) == [
        "hi",
        "[unfollow] The user blocked the LINE account: answers here no longer reach them.",
    ]
    session.refresh_from_db()
    assert session.state == ChatSession.State.ENDED
    # No "chat ended" notice is pushed to a user who has blocked the account.
    assert len(line.calls_to("/v2/bot/message/push")) == pushed
    # Blocked again after an agent ended the chat: nothing more reaches LiveChat.
    line.post_events([unfollow_event(USER)])
    drain()
    assert len(chat_texts(livechat, session)) == 2


def test_an_unfollow_before_the_first_message_left_tells_the_agent_too(line, livechat, drain):
    line.post_events([text_event(USER, "hi"), unfollow_event(USER)])  # before the worker ran
    drain()
    session = session_of()
    assert chat_texts(livechat, session) == ["hi", relay.line_events.UNFOLLOW_NOTE]
    assert not livechat.chats[session.chat_id]["threads"][-1]["active"]


def test_an_unfollow_while_the_first_message_starts_the_chat_ends_it_for_good(
    line, livechat, drain
):
    # From helper-19's review: the worker, inside start_chat, must not open the session again
    # once LiveChat answers, or the chat's end is pushed to the user who blocked the account.
    livechat.echo_customer_events = True  # the close comes back as chat_deactivated
    line.post_events([text_event(USER, "hi")])
    livechat.slow("start_chat", 1.5)

    worker = drain_in_background(drain)
    wait_until(lambda: livechat.chats)  # the worker is inside start_chat
    line.blocked(USER)
    line.post_events([unfollow_event(USER)])
    relay.apply_line_inbox()  # another worker thread applies the unfollow meanwhile
    worker.join()
    drain()
    session = session_of()
    assert session.state == ChatSession.State.ENDED
    assert not session.messages.filter(kind=Message.Kind.END).exists()
    assert line.calls_to("/v2/bot/message/push") == []
    # The chat the first message started is the one the agent is told of the block in.
    assert chat_texts(livechat, session) == ["hi", relay.line_events.UNFOLLOW_NOTE]
    assert not livechat.chats[session.chat_id]["threads"][-1]["active"]


def test_a_reply_waiting_for_a_retry_when_the_user_blocks_is_dropped(
    line, livechat, drain, settings
):
    line.post_events([text_event(USER, "hi")])
    drain()
    session = session_of()
    settings.DELIVERY_BACKOFF_BASE = 30  # LINE failed: the next try is a while away
    line.fail("/v2/bot/message/push", status=500, times=1)
    livechat.agent_says(session.chat_id, "Here is your answer")
    delivery.run_once()
    line.blocked(USER)
    line.post_events([unfollow_event(USER)])
    delivery.run_once()
    # Unblocked later: the old answer of a closed chat does not turn up out of nowhere.
    line.unblocked(USER)
    Message.objects.filter(status=Message.Status.PENDING).update(next_attempt_at=timezone.now())
    drain()
    assert "Here is your answer" not in line.texts_for(USER)
    answer = Message.objects.get(body="Here is your answer")
    assert (answer.status, answer.last_error) == (
        Message.Status.CANCELLED,
        "the user blocked the account",
    )


def test_a_users_reply_to_an_earlier_message_shows_the_agent_which_one(line, livechat, drain):
    question = text_event(USER, "Where is my order?")
    line.post_events([question])
    drain()
    answer = "It ships on Monday 14 December from our Osaka warehouse, by express courier."
    livechat.agent_says(session_of().chat_id, answer)
    drain()
    answer_id = Message.objects.get(body=answer).line_message_id
    assert answer_id  # from LINE's answer to the push
    # In LINE the user long-presses a message and replies to it; LINE says which one it was.
    line.post_events([text_event(USER, "Great, thanks", message={"quotedMessageId": answer_id})])
    own = {"quotedMessageId": question["message"]["id"]}
    line.post_events([text_event(USER, "Still there?", message=own)])
    line.post_events([text_event(USER, "And this?", message={"quotedMessageId": "1" * 18})])
    drain()
    reply = Message.objects.get(body__endswith="Still there?").line_message_id
    line.post_events([text_event(USER, "Hello?", message={"quotedMessageId": reply})])
    drain()
    assert chat_texts(livechat, session_of())[-4:] == [
        "[reply to “It ships on Monday 14 December from our Osaka warehouse, by…”]\nGreat, thanks",
        "[reply to “Where is my order?”]\nStill there?",
        "[reply to an earlier message]\nAnd this?",  # older than the bridge's record
        "[reply to “Still there?”]\nHello?",  # not to the quote inside it
    ]


def test_a_postback_as_a_users_first_action_opens_the_chat(line, livechat, drain):
    line.post_events([base_event("postback", USER, postback={"data": "action=contact_support"})])
    drain()
    assert chat_texts(livechat, session_of()) == ["[postback] action=contact_support"]


def test_unsend_before_delivery_stops_the_message(line, livechat, drain):
    event = text_event(USER, "oops")
    line.post_events([event])
    line.post_events([unsend_event(USER, event["message"]["id"])])
    drain()
    assert Message.objects.get(body="oops").status == Message.Status.CANCELLED
    assert not livechat.calls_to("send_event") and not livechat.calls_to("start_chat")


def test_unsend_after_delivery_removes_it_on_livechat(line, livechat, drain):
    keep = text_event(USER, "keep")
    oops = text_event(USER, "oops")
    line.post_events([keep, oops])
    drain()
    line.post_events([unsend_event(USER, oops["message"]["id"])])
    drain()
    assert len(livechat.calls_to("delete_event")) == 1
    assert chat_texts(livechat, session_of()) == ["keep"]


def test_an_unsend_after_a_resume_whose_answer_was_lost_removes_it_from_the_new_thread(
    line, livechat, drain, settings
):
    # LiveChat resumed the ended chat with the message, but its answer came too late: the retry
    # finds the message in the new thread, and the unsend must look for it there.
    line.post_events([text_event(USER, "first")])
    drain()
    session = session_of()
    livechat.agent_ends_chat(session.chat_id)
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    livechat.slow("resume_chat", 1.0)
    oops = text_event(USER, "oops")
    line.post_events([oops])
    drain()
    time.sleep(1.0)  # let the slow answer finish on the fake's side
    assert len(livechat.calls_to("resume_chat")) == 1
    threads = livechat.chats[session.chat_id]["threads"]
    assert [e["text"] for e in threads[-1]["events"] if e["type"] == "message"] == ["oops"]

    line.post_events([unsend_event(USER, oops["message"]["id"])])
    drain()
    assert not [e for e in threads[-1]["events"] if e["type"] == "message"]
    assert session_of().thread_id == threads[-1]["id"]


def test_unsend_while_the_message_is_being_sent_removes_it_once_sent(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    oops = text_event(USER, "oops")
    line.post_events([oops])
    relay.apply_line_inbox()  # queued for the agent, not sent yet
    livechat.slow("send_event", 1.5)  # LiveChat takes it; its answer takes a while
    sends = len(livechat.calls_to("send_event"))

    def send() -> None:
        try:
            delivery.run_once(intake=False)
        finally:
            connection.close()

    sender = threading.Thread(target=send)
    sender.start()
    wait_until(lambda: len(livechat.calls_to("send_event")) == sends + 1, 10)
    line.post_events([unsend_event(USER, oops["message"]["id"])])
    relay.apply_line_inbox()  # the unsend, applied while the send is under way
    sender.join(10)
    drain()
    assert chat_texts(livechat, session_of()) == ["hi"]
    assert len(livechat.calls_to("delete_event")) == 1
    assert Message.objects.get(body="oops").status == Message.Status.SENT


def test_a_users_events_from_separate_deliveries_go_in_timestamp_order(line, livechat, drain):
    now = int(time.time() * 1000)
    line.post_events([text_event(USER, "second", timestamp=now + 5)])
    line.post_events([text_event(USER, "first", timestamp=now)])
    drain()
    assert chat_texts(livechat, session_of()) == ["first", "second"]


def test_events_taken_one_by_one_after_a_broken_one_still_go_in_timestamp_order(
    line, livechat, drain
):
    line.post_events([text_event(USER, "hi")])
    drain()
    now = int(time.time() * 1000)
    broken = text_event(USER, "x", timestamp="soon", message=None)  # unreadable, as above
    broken["type"] = "postback"
    broken["postback"] = "not an object"
    line.post_events([text_event(USER, "second", timestamp=now + 5)])
    line.post_events([broken])
    line.post_events([text_event(USER, "first", timestamp=now)])
    drain()
    assert chat_texts(livechat, session_of()) == ["hi", "first", "second"]
    assert InboundEvent.objects.get(event_id=broken["webhookEventId"]).outcome.startswith("error")


@pytest.mark.parametrize(
    ("known_user", "applied_apart"), [(True, False), (True, True), (False, True)]
)
def test_an_unsend_delivered_before_its_message_keeps_it_from_the_agent(
    line, livechat, drain, known_user, applied_apart
):
    if known_user:
        line.post_events([text_event(USER, "hi")])
        drain()
    now = int(time.time() * 1000)
    oops = text_event(USER, "oops", timestamp=now)
    line.post_events([unsend_event(USER, oops["message"]["id"], timestamp=now + 10)])
    if applied_apart:  # the message's delivery came after the unsend had been applied
        drain()
    line.post_events([oops])
    line.post_events([text_event(USER, "after", timestamp=now + 20)])
    drain()
    assert chat_texts(livechat, session_of()) == (["hi", "after"] if known_user else ["after"])
    assert Message.objects.get(body="oops").status == Message.Status.CANCELLED
    assert not livechat.calls_to("delete_event")


def test_a_chat_found_again_keeps_its_thread_so_an_unsend_still_removes(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    # What a save that failed after start_chat leaves: LiveChat has the chat, we do not.
    ChatSession.objects.filter(line_id=USER).update(chat_id="", thread_id="")
    oops = text_event(USER, "oops")
    line.post_events([oops])
    drain()
    assert livechat.calls_to("list_chats")
    line.post_events([unsend_event(USER, oops["message"]["id"])])
    drain()
    assert chat_texts(livechat, session_of()) == ["hi"]
    assert Message.objects.get(kind=Message.Kind.UNSEND).status == Message.Status.SENT


@pytest.mark.parametrize("removed_before_the_timeout", [True, False])
def test_unsend_whose_answer_was_lost_is_removed_once_and_not_failed(
    line, livechat, drain, settings, removed_before_the_timeout
):
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    oops = text_event(USER, "oops")
    line.post_events([oops])
    drain()
    if removed_before_the_timeout:
        livechat.slow("delete_event", 1.0)  # removed on LiveChat; the answer comes too late
    else:
        livechat.fail("delete_event", delay=1.0)  # nothing removed, and no answer in time
    line.post_events([unsend_event(USER, oops["message"]["id"])])
    drain()
    time.sleep(1.0)  # let the slow answer finish on the fake's side
    removal = Message.objects.get(kind=Message.Kind.UNSEND)
    assert removal.status == Message.Status.SENT, removal.last_error
    assert chat_texts(livechat, session_of()) == []
    assert len(livechat.calls_to("delete_event")) == (1 if removed_before_the_timeout else 2)
    assert Message.objects.get(body="oops").payload.get("unsent") is True


def test_an_unsend_from_an_earlier_thread_whose_answer_was_lost_is_still_removed(
    line, livechat, drain, settings
):
    # LINE lets a user unsend a message of a chat that has since ended and been resumed.
    oops = text_event(USER, "oops")
    line.post_events([oops])
    drain()
    session = session_of()
    livechat.agent_ends_chat(session.chat_id)
    line.post_events([text_event(USER, "back again")])
    drain()
    assert len(livechat.chats[session.chat_id]["threads"]) == 2
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    livechat.fail("delete_event", delay=1.0)  # nothing removed, and no answer in time
    line.post_events([unsend_event(USER, oops["message"]["id"])])
    drain()
    assert chat_texts(livechat, session) == ["back again"]
    assert len(livechat.calls_to("delete_event")) == 2


def test_follow_greets_by_reply_when_configured(line, livechat, drain, settings):
    settings.LINE_FOLLOW_GREETING = "Welcome!"
    line.post_events([follow_event(USER)])
    drain()
    assert line.texts_for(USER) == ["Welcome!"]
    assert len(line.calls_to("/v2/bot/message/reply")) == 1
    assert not line.calls_to("/v2/bot/message/push")


def test_a_reply_whose_answer_was_lost_greets_once(line, livechat, drain, settings):
    settings.LINE_FOLLOW_GREETING = "Welcome!"
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    line.slow("/v2/bot/message/reply", 1.0)  # delivered, but answered too late
    line.post_events([follow_event(USER)])
    drain()
    time.sleep(1.0)  # let the slow answer finish on the fake's side
    assert line.texts_for(USER) == ["Welcome!"]
    assert not line.calls_to("/v2/bot/message/push")
    assert Message.objects.get(body="Welcome!").status == Message.Status.SENT


def test_a_reply_token_refused_at_the_first_try_greets_by_push(line, livechat, drain, settings):
    settings.LINE_FOLLOW_GREETING = "Welcome!"
    line.fail("/v2/bot/message/reply", status=400)  # e.g. the token was spent elsewhere
    line.post_events([follow_event(USER)])
    drain()
    assert line.texts_for(USER) == ["Welcome!"]
    assert len(line.calls_to("/v2/bot/message/push")) == 1


def test_a_greeting_queued_behind_an_answer_still_goes_by_reply(line, livechat, drain, settings):
    # The user unblocks the account while an answer waits to be pushed: the greeting follows
    # it by reply (free), not added to the answer's push.
    settings.LINE_FOLLOW_GREETING = "Welcome!"
    line.post_events([text_event(USER, "hi")])
    drain()
    livechat.agent_says(session_of().chat_id, "Here is your answer")
    line.post_events([follow_event(USER, is_unblocked=True)])
    drain()
    assert line.texts_for(USER) == ["Here is your answer", "Welcome!"]
    assert [len(c.body["messages"]) for c in line.calls_to("/v2/bot/message/push")] == [1]
    assert len(line.calls_to("/v2/bot/message/reply")) == 1


def test_a_follow_without_a_reply_token_is_greeted_by_push(line, livechat, drain, settings):
    settings.LINE_FOLLOW_GREETING = "Welcome!"
    line.post_events([follow_event(USER, replyToken=None)])
    drain()
    assert line.texts_for(USER) == ["Welcome!"]
    assert len(line.calls_to("/v2/bot/message/push")) == 1


def test_a_postback_reaches_the_agent_with_what_the_user_picked(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    postback = {"data": "action=book", "params": {"datetime": "2026-12-24T18:30"}}
    line.post_events([base_event("postback", USER, postback=postback)])
    drain()
    assert chat_texts(livechat, session_of())[-1] == (
        "[postback] action=book (datetime: 2026-12-24T18:30)"
    )


def test_a_reply_lost_and_retried_after_its_token_expired_greets_by_push(
    line, livechat, drain, settings
):
    settings.LINE_FOLLOW_GREETING = "Welcome!"
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    line.reply_token_ttl = 0.2
    line.fail("/v2/bot/message/reply", delay=1.0)  # not delivered, and no answer in time
    # Its event is two minutes old (a redelivery): the token has expired by the retry.
    line.post_events([follow_event(USER, timestamp=int(time.time() * 1000) - 120_000)])
    drain()
    time.sleep(1.0)  # let the slow answer finish on the fake's side
    assert line.texts_for(USER) == ["Welcome!"]
    assert len(line.calls_to("/v2/bot/message/push")) == 1


def test_follow_without_greeting_sends_nothing(line, livechat, drain):
    line.post_events([follow_event(USER)])
    drain()
    assert not line.calls_to("/v2/bot/message")


def test_the_webhook_only_stores_the_events_and_the_worker_applies_them(line, livechat, drain):
    status, _ = line.post_events([text_event(USER, "first"), text_event(USER, "second")])
    assert status == 200
    # Acknowledged means stored: the events wait in the inbox, nothing else was written yet.
    waiting = InboundEvent.objects.filter(source="line", applied_at__isnull=True)
    assert waiting.count() == 2 and not Message.objects.exists()
    drain()
    assert not waiting.exists()
    assert set(InboundEvent.objects.values_list("outcome", flat=True)) == {"relayed"}
    assert chat_texts(livechat, session_of()) == ["first", "second"]


def test_an_event_the_bridge_cannot_apply_is_parked_and_later_ones_still_go(line, livechat, drain):
    line.post_events([text_event(USER, "before")])
    # A message event whose `message` is a string, not an object: the bridge cannot read it.
    broken = text_event(USER, "x", message=None)
    broken["message"] = "not an object"
    broken["type"] = "postback"
    broken["postback"] = "not an object either"
    line.post_events([broken])
    line.post_events([text_event(USER, "after")])
    drain()
    assert chat_texts(livechat, session_of()) == ["before", "after"]
    parked = InboundEvent.objects.get(event_id=broken["webhookEventId"])
    assert parked.applied_at is not None and parked.outcome.startswith("error: ")


def test_a_profile_line_refuses_is_asked_for_again_only_once_the_user_follows(
    line, livechat, drain
):
    # No profile: the user writes without being a friend of the account (LINE answers 404).
    for text in ("hi", "anyone?", "hello?"):
        line.post_events([text_event(USER, text)])
        drain()
    session = session_of()
    assert chat_texts(livechat, session) == ["hi", "anyone?", "hello?"]
    assert len(line.calls_to("/v2/bot/profile")) == 1
    assert livechat.customers[session.customer_id].get("name") is None
    # A day later it is asked for again.
    ChatSession.objects.filter(pk=session.pk).update(
        profile_refused_at=timezone.now() - timedelta(hours=25)
    )
    line.post_events([text_event(USER, "next day")])
    drain()
    assert len(line.calls_to("/v2/bot/profile")) == 2

    line.profiles[USER] = {"displayName": "Hanako", "userId": USER, "language": "en"}
    line.post_events([follow_event(USER)])
    line.post_events([text_event(USER, "I added you")])
    drain()
    assert len(line.calls_to("/v2/bot/profile")) == 3
    assert livechat.customers[session.customer_id]["name"] == "Hanako"


def test_a_name_livechat_refuses_at_first_contact_does_not_hold_the_message_back(
    line, livechat, drain, profile
):
    livechat.fail("update_customer", status=400, error_type="validation")
    line.post_events([text_event(USER, "hi")])
    drain()
    assert chat_texts(livechat, session_of()) == ["hi"]
    assert Message.objects.get(body="hi").status == Message.Status.SENT


def test_a_profile_line_could_not_give_at_first_contact_is_asked_for_again(line, livechat, drain):
    line.profiles[USER] = {"displayName": "Hanako", "userId": USER, "language": "en"}
    line.fail("/v2/bot/profile", status=500, times=1)
    line.post_events([text_event(USER, "hi")])
    drain()
    session = session_of()
    assert livechat.customers[session.customer_id].get("name") is None
    line.post_events([text_event(USER, "are you there?")])
    drain()
    assert livechat.customers[session.customer_id]["name"] == "Hanako"
    livechat.agent_ends_chat(session.chat_id)
    drain()
    assert line.texts_for(USER) == ["The chat has ended."]  # in the profile's language
    # Known now: the next message asks LINE nothing.
    asked = len(line.calls_to("/v2/bot/profile"))
    line.post_events([text_event(USER, "thanks")])
    drain()
    assert len(line.calls_to("/v2/bot/profile")) == asked


def test_a_profile_without_a_language_is_asked_for_once(line, livechat, drain):
    # LINE leaves `language` out of some profiles: the name is had, the notices use the default.
    line.profiles[USER] = {"displayName": "Hanako", "userId": USER}
    for text in ("hi", "anyone?", "hello?"):
        line.post_events([text_event(USER, text)])
        drain()
    session = session_of()
    assert chat_texts(livechat, session) == ["hi", "anyone?", "hello?"]
    assert livechat.customers[session.customer_id]["name"] == "Hanako"
    assert len(line.calls_to("/v2/bot/profile")) == 1
    assert len(livechat.calls_to("update_customer")) == 1
