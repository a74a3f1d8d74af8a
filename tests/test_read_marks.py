"""What an agent has seen in LiveChat shows as read (既読) in the LINE user's chat: LiveChat's
events_marked_as_seen webhook, then LINE's markAsRead with the token of the newest message seen."""

from __future__ import annotations

from django.utils import timezone

from sessions_app import delivery
from sessions_app.models import ChatSession, InboundEvent, Message
from tests.fakes.line import follow_event, text_event, unfollow_event

USER = "U" + "5" * 32
MARK_AS_READ = "/v2/bot/chat/markAsRead"


def marked_read(line) -> list[str]:
    """The tokens LINE accepted read marks for, in order."""
    return [c.body["markAsReadToken"] for c in line.calls_to(MARK_AS_READ) if c.status == 200]


def said(line, drain, *texts: str) -> list[str]:
    """The user writes `texts`, which reach the agent; their read tokens."""
    events = [text_event(USER, text) for text in texts]
    for event in events:
        assert line.post_events([event])[0] == 200
    drain()
    return [event["message"]["markAsReadToken"] for event in events]


def created_at(livechat, chat_id: str, text: str) -> str:
    """When LiveChat recorded the user's `text`, by its own clock."""
    events = [e for t in livechat.chats[chat_id]["threads"] for e in t["events"]]
    return next(e["created_at"] for e in events if e.get("text") == text)


def test_what_the_agent_has_seen_shows_as_read_up_to_there_and_once(line, livechat, drain):
    first, second = said(line, drain, "first", "second")
    chat_id = ChatSession.objects.get(line_id=USER).chat_id
    assert marked_read(line) == []  # reaching LiveChat is not being read

    livechat.agent_sees(chat_id, up_to=created_at(livechat, chat_id, "first"))
    drain()
    assert marked_read(line) == [first]  # "second" came after what the agent saw

    livechat.agent_sees(chat_id)  # the agent app, when the newest event shows
    drain()
    assert marked_read(line) == [first, second]  # LINE marks every earlier message with it

    livechat.agent_sees(chat_id)  # seen again, nothing new: no call
    livechat.agent_sees(chat_id, up_to=created_at(livechat, chat_id, "first"))
    drain()
    assert marked_read(line) == [first, second]
    assert Message.objects.filter(kind=Message.Kind.READ).count() == 2


def test_a_read_mark_waits_for_line_without_holding_up_the_agents_reply(line, livechat, drain):
    said(line, drain, "hello?")
    chat_id = ChatSession.objects.get(line_id=USER).chat_id
    line.fail(MARK_AS_READ, status=500, times=100)
    livechat.agent_sees(chat_id)
    livechat.agent_says(chat_id, "hello, how can I help?")
    delivery.run_once((Message.Route.LINE_READ,))  # the worker tries the mark: LINE fails
    drain(routes=(Message.Route.LINE_PUSH,))
    assert line.texts_for(USER) == ["hello, how can I help?"]
    mark = Message.objects.get(kind=Message.Kind.READ)
    assert mark.status == Message.Status.PENDING and "500" in mark.last_error
    thanks = text_event(USER, "thanks!")  # seen too, while LINE still fails
    assert line.post_events([thanks])[0] == 200
    drain(routes=(Message.Route.LIVECHAT,))
    livechat.agent_sees(chat_id)
    newer = thanks["message"]["markAsReadToken"]

    line.clear_faults()
    drain()
    assert marked_read(line) == [newer]  # once, when LINE is back: it covers the older mark
    marks = Message.objects.filter(kind=Message.Kind.READ)
    assert [m.status for m in marks] == [Message.Status.SENT] * 2


def test_a_read_mark_waiting_for_line_when_the_user_blocks_is_dropped(line, livechat, drain):
    said(line, drain, "hello?")
    chat_id = ChatSession.objects.get(line_id=USER).chat_id
    line.fail(MARK_AS_READ, status=500, times=1)
    livechat.agent_sees(chat_id)
    delivery.run_once((Message.Route.LINE_READ,))  # LINE fails: the mark waits for a retry
    line.post_events([unfollow_event(USER)])
    Message.objects.filter(status=Message.Status.PENDING).update(next_attempt_at=timezone.now())
    drain()
    assert marked_read(line) == []  # nothing a blocked user could see
    mark = Message.objects.get(kind=Message.Kind.READ)
    assert (mark.status, mark.last_error) == (
        Message.Status.CANCELLED,
        "the user blocked the account",
    )


def test_what_an_agent_reads_after_the_user_blocked_marks_nothing_until_they_write_again(
    line, livechat, drain
):
    said(line, drain, "hello?")
    chat_id = ChatSession.objects.get(line_id=USER).chat_id
    line.post_events([unfollow_event(USER)])
    drain()
    livechat.agent_sees(chat_id)  # the agent reads "hello?" and the note that the user left
    drain()
    assert marked_read(line) == []
    assert not Message.objects.filter(kind=Message.Kind.READ).exists()

    line.post_events([follow_event(USER, is_unblocked=True)])  # unblocked, and writes again
    (again,) = said(line, drain, "it's me again")
    livechat.agent_sees(ChatSession.objects.get(line_id=USER).chat_id)
    drain()
    assert marked_read(line) == [again]


def test_a_read_mark_line_refuses_is_recorded_and_the_next_one_goes(line, livechat, drain):
    (refused,) = said(line, drain, "one")
    chat_id = ChatSession.objects.get(line_id=USER).chat_id
    line.fail(MARK_AS_READ, status=400, message="Invalid markAsReadToken")
    livechat.agent_sees(chat_id)
    drain()
    mark = Message.objects.get(kind=Message.Kind.READ)
    assert mark.status == Message.Status.FAILED and "Invalid markAsReadToken" in mark.last_error
    assert [c.body["markAsReadToken"] for c in line.calls_to(MARK_AS_READ)] == [refused]

    (accepted,) = said(line, drain, "two")
    livechat.agent_sees(chat_id)
    drain()
    assert marked_read(line) == [accepted]


def test_a_message_without_a_read_token_is_not_marked(line, livechat, drain):
    # LINE's documented payloads before November 2025 carry no markAsReadToken.
    assert line.post_events([text_event(USER, "old", message={"markAsReadToken": None})])[0] == 200
    drain()
    envelope = livechat.agent_sees(ChatSession.objects.get(line_id=USER).chat_id)
    drain()
    assert line.calls_to(MARK_AS_READ) == []
    record = InboundEvent.objects.get(event_type="events_marked_as_seen")
    assert record.payload["payload"] == envelope["payload"]
    assert record.outcome == "nothing new seen"


def test_a_json_api_user_has_nothing_marked_in_line(api, line, livechat, drain):
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    assert api.call("/send", {"line_id": "U1", "message": "from the web"})["type"] == "send"
    drain()
    livechat.agent_sees(ChatSession.objects.get(line_id="U1").chat_id)
    drain()
    assert line.calls_to(MARK_AS_READ) == []
    assert not Message.objects.filter(kind=Message.Kind.READ).exists()


def test_only_what_an_agent_has_seen_marks_anything_read(line, livechat, drain):
    said(line, drain, "hi")
    session = ChatSession.objects.get(line_id=USER)
    # LiveChat says so of any user of the chat; the customer is the bridge itself.
    livechat.agent_sees(session.chat_id, agent_id=session.customer_id)
    drain()
    assert line.calls_to(MARK_AS_READ) == []
