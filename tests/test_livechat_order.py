"""LiveChat's webhooks keep no order, and a retried one comes up to a minute late: what the user
hears still goes in the order the agent said it, and a late webhook does not undo a later one."""

from __future__ import annotations

import threading
import time

import pytest
from django.utils import timezone

from sessions_app import delivery
from sessions_app.models import ChatSession, InboundEvent, Message
from tests.conftest import drain_in_background, wait_until
from tests.fakes.line import text_event

USER = "U" + "7" * 32
ENDED = "The chat has ended."


@pytest.fixture
def chatting(line, livechat, drain) -> ChatSession:
    """A LINE user (English profile) who has written once; the chat is open."""
    line.profiles[USER] = {"displayName": "Hanako", "userId": USER, "language": "en"}
    line.post_events([text_event(USER, "hello")])
    drain()
    return ChatSession.objects.get(line_id=USER)


def test_agent_messages_whose_webhooks_come_swapped_reach_the_user_in_said_order(
    line, livechat, drain, chatting
):
    with livechat.webhooks_held() as held:
        livechat.agent_says(chatting.chat_id, "Let me check.")
        livechat.agent_says(chatting.chat_id, "Found it: your order has shipped.")
    for envelope in reversed(held):
        assert livechat.post_webhook(envelope) == 200
    drain()
    assert line.texts_for(USER) == ["Let me check.", "Found it: your order has shipped."]
    assert Message.objects.filter(direction=Message.Direction.TO_USER).count() == 2


def test_a_goodbye_that_comes_after_the_end_goes_before_it_and_the_chat_stays_ended(
    line, livechat, drain, chatting
):
    with livechat.webhooks_held() as held:
        livechat.agent_says(chatting.chat_id, "Bye, have a nice day")
    livechat.agent_ends_chat(chatting.chat_id)  # its webhook is posted at once
    livechat.post_webhook(held[0])  # the goodbye's, retried by LiveChat
    drain()
    assert line.texts_for(USER) == ["Bye, have a nice day", ENDED]
    chatting.refresh_from_db()
    assert chatting.state == ChatSession.State.ENDED
    # The ended chat moved to another group later: not news for the user.
    livechat.transfer(chatting.chat_id, group_ids=[1])
    drain()
    assert line.texts_for(USER) == ["Bye, have a nice day", ENDED]


def test_a_pull_client_reads_the_goodbye_before_the_end(api, livechat):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    with livechat.webhooks_held() as held:
        livechat.agent_says(session.chat_id, "Thank you, goodbye")
    livechat.agent_ends_chat(session.chat_id)
    livechat.post_webhook(held[0])
    polls = [api.call("/messages", {"line_id": "U1", "wait": 1}) for _ in range(3)]
    assert polls == [
        {"type": "message", "message": "Thank you, goodbye"},
        {"type": "end", "message": "接続が終了しました。"},
        {"type": "ok", "message": ""},
    ]


def test_a_late_message_does_not_overtake_one_already_being_retried(
    line, livechat, drain, chatting
):
    # The later message is already under retry (LINE answered 500): its place is fixed, so the
    # earlier one, arriving late, follows it; each is delivered once.
    with livechat.webhooks_held() as held:
        livechat.agent_says(chatting.chat_id, "one")
        livechat.agent_says(chatting.chat_id, "two")
    line.fail("/v2/bot/message/push", status=500, times=1)
    livechat.post_webhook(held[1])
    delivery.run_once()
    assert Message.objects.get(body="two").attempts == 1
    livechat.post_webhook(held[0])
    drain()
    assert line.texts_for(USER) == ["two", "one"]


def test_a_late_message_still_goes_before_a_later_one_queued_behind_one_being_retried(
    line, livechat, drain, chatting
):
    # "two" is under retry (its place is fixed); "three" waits untaken behind it. "one", arriving
    # late, cannot pass "two" but still goes before "three".
    with livechat.webhooks_held() as held:
        livechat.agent_says(chatting.chat_id, "one")
        livechat.agent_says(chatting.chat_id, "two")
        livechat.agent_says(chatting.chat_id, "three")
    line.fail("/v2/bot/message/push", status=500, times=1)
    livechat.post_webhook(held[1])
    delivery.run_once()
    assert Message.objects.get(body="two").attempts == 1
    livechat.post_webhook(held[2])
    livechat.post_webhook(held[0])
    drain()
    assert line.texts_for(USER) == ["two", "one", "three"]


def test_a_late_message_still_goes_before_one_only_left_out_of_a_full_push(
    line, livechat, drain, chatting
):
    # "three" is taken with "long" (five LINE messages, a full push) but left out of that push:
    # no attempt fixed its place, so "two", arriving late, still goes before it.
    long = "x" * 25000
    with livechat.webhooks_held() as held:
        livechat.agent_says(chatting.chat_id, long)
        livechat.agent_says(chatting.chat_id, "two")
        livechat.agent_says(chatting.chat_id, "three")
    livechat.post_webhook(held[0])
    livechat.post_webhook(held[2])
    delivery.run_once()
    assert "".join(line.texts_for(USER)) == long
    livechat.post_webhook(held[1])
    drain()
    assert line.texts_for(USER)[5:] == ["two", "three"]
    assert Message.objects.get(body="three").attempts == 1


def test_an_agent_who_joined_before_the_chat_started_webhook_is_announced_once(
    line, livechat, drain, chatting
):
    with livechat.webhooks_held() as held:
        livechat.agent_joins(chatting.chat_id, name="Agent Smith")
    livechat.post_webhook(held[0])
    started = livechat.chat_started_envelope(chatting.chat_id)  # the agent among its users
    livechat.post_webhook(started)  # late
    drain()
    assert line.texts_for(USER).count("Agent Smith has joined the chat.") == 1


def test_a_late_queue_position_does_not_follow_the_agent_joining(line, livechat, drain, chatting):
    queued = livechat.chat_started_envelope(chatting.chat_id, queue={"position": 4})
    livechat.agent_joins(chatting.chat_id, name="Agent Smith")
    livechat.post_webhook(queued)
    drain()
    chatting.refresh_from_db()
    assert chatting.state == ChatSession.State.WITH_AGENT
    assert not [text for text in line.texts_for(USER) if "queue" in text]


def test_an_agent_joining_after_the_end_of_the_chat_is_not_announced(
    line, livechat, drain, chatting
):
    with livechat.webhooks_held() as held:
        livechat.agent_joins(chatting.chat_id, name="Agent Smith")
    livechat.agent_ends_chat(chatting.chat_id)
    livechat.post_webhook(held[0])
    drain()
    assert line.texts_for(USER) == [ENDED]
    chatting.refresh_from_db()
    assert chatting.state == ChatSession.State.ENDED


def _first_chat_started_meanwhile(livechat, drain) -> tuple[threading.Thread, dict]:
    """The worker starts the user's chat; LiveChat has started it but its answer is still on the
    way (1 s). Returns the worker's thread and the chat, as LiveChat has it."""
    livechat.slow("start_chat", 1.0)

    worker = drain_in_background(drain)
    wait_until(lambda: livechat.chats)
    (chat,) = livechat.chats.values()
    return worker, chat


def test_a_greeting_that_outruns_the_start_of_the_chat_reaches_the_user(line, livechat, drain):
    line.profiles[USER] = {"displayName": "Hanako", "userId": USER, "language": "en"}
    line.post_events([text_event(USER, "hi")])
    worker, chat = _first_chat_started_meanwhile(livechat, drain)
    livechat.agent_says(chat["id"], "Welcome! How can I help?")  # a bot's instant greeting
    worker.join()
    drain()
    assert line.texts_for(USER) == ["Welcome! How can I help?"]
    assert InboundEvent.objects.get(event_type="incoming_event").outcome == "relayed"


def test_a_greeting_in_a_chat_whose_start_answer_was_lost_reaches_the_user(
    line, livechat, drain, settings
):
    # LiveChat started the chat but its answer never came: the bot's greeting is parked until
    # the retry finds the chat (by custom_id), and then reaches the user.
    line.profiles[USER] = {"displayName": "Hanako", "userId": USER, "language": "en"}
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    livechat.slow("start_chat", 1.0)
    line.post_events([text_event(USER, "hi")])
    delivery.run_once()
    (chat,) = livechat.chats.values()
    livechat.agent_says(chat["id"], "Welcome! How can I help?")
    assert InboundEvent.objects.get(event_type="incoming_event").outcome == "unknown chat"
    time.sleep(1.0)  # let the slow answer finish on the fake's side
    Message.objects.filter(status=Message.Status.PENDING).update(next_attempt_at=timezone.now())
    drain()
    assert line.texts_for(USER) == ["Welcome! How can I help?"]
    assert InboundEvent.objects.get(event_type="incoming_event").outcome == "relayed"
    assert len(livechat.calls_to("start_chat")) == 1


def test_a_greeting_before_the_chat_started_webhook_follows_its_notice(line, livechat, drain):
    line.profiles[USER] = {"displayName": "Hanako", "userId": USER, "language": "en"}
    line.post_events([text_event(USER, "hi")])
    worker, chat = _first_chat_started_meanwhile(livechat, drain)
    livechat.agent_says(chat["id"], "Welcome! How can I help?")
    started = livechat.chat_started_envelope(chat["id"])
    assert livechat.post_webhook(started) == 200  # before the worker has the answer
    worker.join()
    drain()
    assert line.texts_for(USER) == [
        "We are connecting you to an agent. Please wait a moment.",
        "Welcome! How can I help?",
    ]


def test_a_chat_started_and_ended_before_livechat_answered_its_start_stays_ended(
    line, livechat, drain
):
    line.profiles[USER] = {"displayName": "Hanako", "userId": USER, "language": "en"}
    line.post_events([text_event(USER, "hi")])
    worker, chat = _first_chat_started_meanwhile(livechat, drain)
    # Before the worker has LiveChat's answer: the chat-started webhook, then the chat's end.
    assert livechat.post_webhook(livechat.chat_started_envelope(chat["id"])) == 200
    with livechat.webhooks_held() as held:
        livechat.agent_joins(chat["id"], name="Agent Smith")
    livechat.agent_ends_chat(chat["id"])
    worker.join()
    drain()
    session = ChatSession.objects.get(line_id=USER)
    assert session.state == ChatSession.State.ENDED
    # The agent's joining, its webhook retried late, is old news for a user told of the end.
    assert livechat.post_webhook(held[0]) == 200
    drain()
    assert line.texts_for(USER) == [
        "We are connecting you to an agent. Please wait a moment.",
        ENDED,
    ]


def test_events_of_chats_that_are_not_the_bridges_stay_recorded_only(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    envelope = livechat.make_envelope(
        "incoming_event",
        {
            "chat_id": "WEBSITECHAT",
            "thread_id": "T1",
            "event": {"id": "T1_1", "type": "message", "text": "a website visitor's chat"},
        },
    )
    assert livechat.post_webhook(envelope) == 200
    assert InboundEvent.objects.get(event_id="T1_1").outcome == "unknown chat"
    assert not Message.objects.filter(body="a website visitor's chat").exists()


def test_a_greeting_that_lost_the_race_with_its_chats_recording_is_swept_up(
    line, livechat, settings
):
    # What two processes at once can leave behind: the greeting's webhook found no session with
    # its chat and committed "unknown chat" just after another process recorded that chat.
    session = ChatSession.objects.create(line_id=USER, customer_id="C1", language="en")
    greeting = livechat.make_envelope(
        "incoming_event",
        {
            "chat_id": "CHAT1",
            "thread_id": "T1",
            "event": {
                "id": "T1_1",
                "type": "message",
                "text": "Welcome! How can I help?",
                "author_id": "bot@example.com",
                "visibility": "all",
                "created_at": "2026-12-02T10:00:00.000000Z",
            },
        },
    )
    assert livechat.post_webhook(greeting) == 200
    assert InboundEvent.objects.get(event_id="T1_1").outcome == "unknown chat"
    ChatSession.objects.filter(pk=session.pk).update(chat_id="CHAT1", thread_id="T1")

    stop = threading.Event()
    worker = threading.Thread(target=delivery.work, args=(stop,), kwargs={"threads": 1})
    worker.start()
    try:
        wait_until(lambda: line.texts_for(USER), timeout=10)
    finally:
        stop.set()
        worker.join(10)
    assert line.texts_for(USER) == ["Welcome! How can I help?"]


@pytest.mark.parametrize("ended", [False, True])
def test_the_first_chat_start_is_heard_by_a_user_ended_before_any_chat(
    line, livechat, drain, ended
):
    line.profiles[USER] = {"displayName": "Hanako", "userId": USER, "language": "en"}
    if ended:  # as an unfollow, or a /close, before the user's first chat leaves it
        ChatSession.objects.create(line_id=USER, state=ChatSession.State.ENDED, language="en")
    line.post_events([text_event(USER, "hi")])
    worker, chat = _first_chat_started_meanwhile(livechat, drain)
    # The chat-started webhook outruns start_chat's answer.
    livechat.post_webhook(livechat.chat_started_envelope(chat["id"], queue={"position": 3}))
    worker.join()
    drain()
    assert line.texts_for(USER) == [
        "We are connecting you to an agent. You are number 3 in the queue."
    ]


def test_reordering_while_the_worker_sends_delivers_every_message_once(line, livechat, chatting):
    # Rows are moved only while no worker has taken them; with the worker sending meanwhile,
    # a row it takes between the look and the move stays where it is, and is sent once.
    stop = threading.Event()
    worker = threading.Thread(target=delivery.work, args=(stop,), kwargs={"threads": 2})
    worker.start()
    texts = []
    try:
        for pair in range(25):
            with livechat.webhooks_held() as held:
                for part in ("a", "b"):
                    texts.append(f"{pair}{part}")
                    livechat.agent_says(chatting.chat_id, texts[-1])
            for envelope in reversed(held):
                assert livechat.post_webhook(envelope) == 200
        wait_until(lambda: len(line.texts_for(USER)) >= len(texts), timeout=30)
    finally:
        stop.set()
        worker.join(10)
    assert sorted(line.texts_for(USER)) == sorted(texts)
    sent = Message.objects.filter(direction=Message.Direction.TO_USER, status="sent")
    assert sent.count() == len(texts)


def test_a_late_end_of_an_earlier_thread_does_not_end_the_resumed_chat(
    line, livechat, drain, chatting
):
    first_thread = livechat.chats[chatting.chat_id]["threads"][-1]["id"]
    livechat.agent_ends_chat(chatting.chat_id)
    drain()
    line.post_events([text_event(USER, "one more question")])  # resumes: a new thread
    drain()
    chatting.refresh_from_db()
    assert chatting.thread_id != first_thread and chatting.state != ChatSession.State.ENDED
    # The router's own close of the first thread, retried by LiveChat after the resume.
    late = livechat.make_envelope(
        "chat_deactivated", {"chat_id": chatting.chat_id, "thread_id": first_thread}
    )
    assert livechat.post_webhook(late) == 200
    drain()
    assert line.texts_for(USER) == [ENDED]
    chatting.refresh_from_db()
    assert chatting.state != ChatSession.State.ENDED
    livechat.agent_says(chatting.chat_id, "Sure, go ahead.")
    drain()
    assert line.texts_for(USER) == [ENDED, "Sure, go ahead."]


def test_a_chat_start_heard_after_its_end_is_not_announced(line, livechat, drain, chatting):
    livechat.agent_joins(chatting.chat_id, name="Agent Smith")
    started = livechat.chat_started_envelope(chatting.chat_id)
    livechat.agent_ends_chat(chatting.chat_id)
    drain()
    before = line.texts_for(USER)
    assert before[-1] == ENDED
    livechat.post_webhook(started)  # incoming_chat, retried a minute late
    drain()
    assert line.texts_for(USER) == before
    chatting.refresh_from_db()
    assert chatting.state == ChatSession.State.ENDED


def test_a_resumed_chat_ended_before_livechat_answered_the_resume_stays_ended(
    line, livechat, drain, chatting
):
    livechat.agent_ends_chat(chatting.chat_id)
    drain()
    livechat.slow("resume_chat", 1.0)  # LiveChat opens the new thread; its answer is on the way
    line.post_events([text_event(USER, "one more question")])

    worker = drain_in_background(drain)
    wait_until(lambda: len(livechat.chats[chatting.chat_id]["threads"]) == 2)
    livechat.agent_ends_chat(chatting.chat_id)  # the new thread's end, before that answer
    worker.join()
    drain()
    chatting.refresh_from_db()
    assert chatting.state == ChatSession.State.ENDED
    assert line.texts_for(USER) == [ENDED, ENDED]
