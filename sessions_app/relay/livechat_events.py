"""LiveChat's webhooks applied to a conversation: an agent's message queued for the user (in
the order it was said), an agent joining, a transfer, the chat's start and end. An event for a
chat the bridge has not recorded yet is parked, and applied once the chat is recorded."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from ..line import client as line_client
from ..livechat import webhooks as livechat_webhooks
from ..livechat.webhooks import LiveChatEvent
from ..models import OTHER_THREAD_END, UNKNOWN_CHAT, ChatSession, InboundEvent, Message
from ..notices import notice_text
from .mailbox import inbound_once, to_user

logger = logging.getLogger(__name__)

State = ChatSession.State
Kind = Message.Kind


def _pushable_parts(session: ChatSession, text: str) -> list[str]:
    """`text` as rows of at most one push each (5 messages of 5,000 UTF-16 units), so that a
    long agent text reaches LINE whole, each part with a retry key of its own."""
    if session.route_to_user != Message.Route.LINE_PUSH:
        return [text]
    pieces = line_client.split_text(text)
    step = line_client.MAX_MESSAGES_PER_REQUEST
    return ["".join(pieces[start : start + step]) for start in range(0, len(pieces), step)]


def _session_for_chat(event: LiveChatEvent) -> ChatSession | None:
    session = ChatSession.objects.filter(chat_id=event.chat_id).first() if event.chat_id else None
    if session is None and event.customer_ids:
        # incoming_chat can outrun the worker recording the chat id it just started.
        session = ChatSession.objects.filter(customer_id__in=event.customer_ids).first()
    return session


WEBHOOK_CREDENTIAL_KEYS = frozenset({"secret_key", "token"})
# LiveChat redelivers a webhook up to 3 times within about a minute. An event without an id of
# its own that comes again after this long is a new one that happens to read the same.
LIVECHAT_REDELIVERY_WINDOW = timedelta(minutes=10)


def agent_event(event: LiveChatEvent) -> str:
    """Apply one LiveChat webhook; returns what was done, for the inbound event record."""
    source = InboundEvent.Source.LIVECHAT_LEGACY if event.legacy else InboundEvent.Source.LIVECHAT
    return inbound_once(
        source=source,
        event_id=event.dedupe_id,
        event_type=event.action,
        # The webhook's credential is checked, not kept.
        payload={k: v for k, v in event.raw.items() if k not in WEBHOOK_CREDENTIAL_KEYS},
        apply=lambda: _apply(event),
        repeat_after=LIVECHAT_REDELIVERY_WINDOW if event.content_keyed else None,
    )


def _apply(event: LiveChatEvent) -> str:
    session = _session_for_chat(event)
    if event.legacy:
        if event.kind == "legacy_chat_ended" and session and session.state != State.ENDED:
            end_chat(session)
            return "chat ended"
        return "recorded"
    if session is None:
        return UNKNOWN_CHAT
    if event.kind in ("message", "file"):
        if event.visibility != "all":
            return "internal note"
        if event.author_id == session.customer_id or event.custom_id.startswith("bridge-"):
            return "own event"
        said = {
            "livechat_event_id": event.event_id,
            "livechat_chat_id": event.chat_id,
            "livechat_thread_id": event.thread_id,
            "said_at": event.said_at,
        }
        if event.kind == "message":
            rows = [
                {"kind": Kind.TEXT, "text": text, **said}
                for text in _pushable_parts(session, event.text)
            ]
            if event.quick_replies and session.route_to_user == Message.Route.LINE_PUSH:
                # Offered with the message's last part: LINE shows the quick replies of the last
                # message it received, and a tap says the button's words, as in LiveChat's widget.
                rows[-1]["payload"] = {"quick_replies": list(event.quick_replies)}
        else:
            name = event.file.get("name") or "file"
            text = f"{name} {event.file.get('url', '')}".strip()
            rows = [{"kind": Kind.FILE, "text": text, "payload": event.file, **said}]
        _queue_in_said_order(session, event, rows)
        if _thread_over(session, event):
            return "relayed (said before the end)"
        if session.state != State.WITH_AGENT:
            session.state = State.WITH_AGENT
            session.save(update_fields=["state", "updated_at"])
        return "relayed"
    if event.kind == "seen":
        return _agent_saw(session, event)
    if event.kind == "chat_deactivated":
        if event.thread_id and session.thread_id and event.thread_id != session.thread_id:
            return OTHER_THREAD_END
        if session.state == State.ENDED:
            return "already ended"
        end_chat(session, event.thread_id)
        return "chat ended"
    if event.kind == "incoming_chat":
        outcome = _chat_started(session, event)
        # Its chat may be new to the bridge: what came for it before is applied now.
        apply_parked(session)
        return outcome
    if event.kind == "agent_added":
        if _thread_over(session, event):
            return "ignored: the thread has ended"
        if session.state == State.WITH_AGENT and session.agent_name == event.agent_name:
            return "agent already in the chat"  # announced by incoming_chat already
        session.state = State.WITH_AGENT
        session.agent_name = event.agent_name
        session.save(update_fields=["state", "agent_name", "updated_at"])
        notice(session, "agent_joined", name=event.agent_name)
        return "agent joined"
    if event.kind == "chat_transferred":
        if session.state == State.ENDED:
            # An archived chat moved to another group (LiveChat sends it without a thread): the
            # user was told the chat ended, and it opens again only when they write.
            return "ignored: transfer of an ended chat"
        session.state = State.QUEUED if event.queue_position is not None else State.OPEN
        session.save(update_fields=["state", "updated_at"])
        if event.queue_position is not None:
            notice(session, "transferred_position", position=event.queue_position)
        else:
            notice(session, "transferred")
        return "transferred"
    return "ignored"


def _agent_saw(session: ChatSession, event: LiveChatEvent) -> str:
    """The agent has seen the chat up to `seen_up_to`: LINE is to show the user's messages as
    read up to the newest of them that LiveChat had by then. Its `created_at` is not known here,
    only that it came after its delivery began (by our clock, which is taken to agree with
    LiveChat's within the time a request takes to reach it)."""
    if event.author_id == session.customer_id:
        return "own event"
    if session.route_to_user != Message.Route.LINE_PUSH or event.seen_up_to is None:
        return "recorded"
    seen = session.messages.filter(
        direction=Message.Direction.TO_AGENT,
        status=Message.Status.SENT,
        attempted_at__lte=event.seen_up_to,
        payload__line_message__has_key="markAsReadToken",
    )
    marked = session.messages.filter(kind=Kind.READ).order_by("-id").first()
    if marked is not None:
        # A read mark covers every earlier message too: only a later one needs another.
        seen = seen.filter(id__gt=marked.payload["message_id"])
    newest = seen.order_by("-id").first()
    if newest is None:
        return "nothing new seen"
    if session.messages.filter(kind=Kind.CLOSE, id__gt=newest.pk).exists():
        # The user closed the chat after those messages. For a LINE user that is an unfollow:
        # they blocked the account, and the agent reads the note saying so. The marks waiting
        # then were dropped (line_events.py), and a new one would reach no one.
        return "the user blocked the account"
    Message.objects.create(
        session=session,
        direction=Message.Direction.TO_USER,
        route=Message.Route.LINE_READ,
        kind=Kind.READ,
        payload={
            "markAsReadToken": newest.payload["line_message"]["markAsReadToken"],
            "message_id": newest.pk,
        },
    )
    return "marked read"


def _chat_started(session: ChatSession, event: LiveChatEvent) -> str:
    heard = _thread_over(session, event) or (
        session.state == State.WITH_AGENT and event.thread_id == session.thread_id
    )
    if event.thread_id:
        session.chat_id = event.chat_id
        session.thread_id = event.thread_id
    if heard:
        # Its agent's joining, or its end, came first (webhooks keep no order): the user
        # has heard of it, and a "connecting you" now would go back in time.
        session.save(update_fields=["chat_id", "thread_id", "updated_at"])
        return "chat started (heard of already)"
    if event.queue_position is not None:
        session.state = State.QUEUED
        notice(session, "queued_position", position=event.queue_position)
    elif event.agent_name:
        session.state = State.WITH_AGENT
        session.agent_name = event.agent_name
        notice(session, "agent_joined", name=event.agent_name)
    else:
        # Started with nobody assigned yet (messaging mode): the user still hears it arrived.
        session.state = State.OPEN
        notice(session, "queued")
    session.save(update_fields=["chat_id", "thread_id", "state", "agent_name", "updated_at"])
    return "chat started"


# How long a LiveChat event for a chat the bridge does not know waits for it to be recorded: the
# worker records a chat it started as soon as LiveChat answers, or a few retries later when
# that answer was lost.
PARKED_SECONDS = 15 * 60


def apply_parked(session: ChatSession) -> None:
    """Apply the LiveChat events that came for the session's chat before the bridge knew the chat
    was this user's (a bot's greeting can outrun start_chat's answer), in the order they came."""
    if not session.chat_id:
        return
    _apply_held(UNKNOWN_CHAT, payload__payload__chat_id=session.chat_id)


def apply_end_heard_early(session: ChatSession) -> None:
    """End the session's thread, just recorded, if LiveChat said it ended before the bridge knew
    of it (its `chat_deactivated` came while the answer to start or resume was on its way)."""
    if session.chat_id and session.thread_id:
        _apply_held(
            OTHER_THREAD_END,
            payload__payload__chat_id=session.chat_id,
            payload__payload__thread_id=session.thread_id,
        )


def _apply_held(outcome: str, **payload_lookups: str) -> None:
    held = InboundEvent.objects.filter(
        source=InboundEvent.Source.LIVECHAT,
        outcome=outcome,
        received_at__gte=timezone.now() - timedelta(seconds=PARKED_SECONDS),
        **payload_lookups,
    ).order_by("id")
    for record in held:
        try:
            with transaction.atomic():
                # Claimed first: the webhook and the worker may both have just learnt the chat.
                claimed = InboundEvent.objects.filter(pk=record.pk, outcome=outcome).update(
                    outcome="applying"
                )
                if claimed:
                    applied = _apply(livechat_webhooks.parse(record.payload))
                    InboundEvent.objects.filter(pk=record.pk).update(outcome=applied[:64])
        except (OperationalError, InterfaceError):
            raise
        except Exception:  # a bug must not undo what the caller has done
            logger.exception("applying a held LiveChat event failed event=%s", record.pk)


# A webhook that raced the recording of its chat (it found no session, and committed after the
# chat was recorded and its parked events applied) is at most this old when the worker sweeps.
PARKED_SWEEP_SECONDS = 120


def apply_parked_livechat_events() -> None:
    """Apply the parked events whose chat a session has now: those that lost the race above (two
    web processes, or a webhook and the worker, at once). Run by the worker every second."""
    since = timezone.now() - timedelta(seconds=PARKED_SWEEP_SECONDS)
    chat_ids = {
        chat_id
        for chat_id in InboundEvent.objects.filter(
            source=InboundEvent.Source.LIVECHAT, outcome=UNKNOWN_CHAT, received_at__gte=since
        ).values_list("payload__payload__chat_id", flat=True)
        if isinstance(chat_id, str) and chat_id
    }
    for session in ChatSession.objects.filter(chat_id__in=chat_ids):
        apply_parked(session)


def _thread_over(session: ChatSession, event: LiveChatEvent) -> bool:
    """Is `event` of the thread whose end the session has recorded already? (A session ended
    before it had any thread, by an unfollow or a /close, has none.)"""
    return (
        session.state == State.ENDED
        and bool(session.thread_id)
        and event.thread_id in ("", session.thread_id)
    )


# How far back from the newest row of a mailbox an agent's late message may go.
REORDER_WINDOW = 50


def _queue_in_said_order(
    session: ChatSession, event: LiveChatEvent, rows: list[dict[str, Any]]
) -> None:
    """Queue what the agent said (`rows`, the fields of each) for the user in the order it was
    said, whatever order LiveChat's webhooks came in: before the rows of the mailbox that were
    said later, and before the end of its thread, when nothing has taken those yet (an attempt
    or a hand-out fixes a row's place). They are queued again behind it."""
    later: list[Message] = []
    newest_first = session.messages.filter(
        route=session.route_to_user, status=Message.Status.PENDING
    ).order_by("-id")[:REORDER_WINDOW]
    for row in newest_first:
        if row.attempts or row.leased_until or not _said_after(row, event):
            break
        later.append(row)
    later.reverse()
    moved = [_queued_fields(row) for row in later] if later and _removed_untaken(later) else []
    for fields in rows:
        to_user(session, **fields)
    for fields in moved:
        Message.objects.create(**fields)


def _removed_untaken(rows: list[Message]) -> bool:
    """Delete `rows` if nothing has taken any of them since they were read (without a lock);
    else leave them all, and False."""
    with transaction.atomic():
        # A row a worker (or a poll) has taken, or is taking (its lock is held: waiting for it
        # could deadlock with the worker), keeps its place; the agent's message then goes last,
        # as it came.
        untaken = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(
                pk__in=[row.pk for row in rows],
                status=Message.Status.PENDING,
                attempts=0,
                leased_until=None,
            )
            .order_by("id")
            .values_list("pk", flat=True)
        )
        if len(untaken) != len(rows):
            return False
        Message.objects.filter(pk__in=untaken).delete()
    return True


def _said_after(row: Message, event: LiveChatEvent) -> bool:
    if row.kind == Kind.END:
        return bool(event.thread_id) and row.livechat_thread_id == event.thread_id
    return bool(row.said_at and event.said_at and row.said_at > event.said_at)


def _queued_fields(row: Message) -> dict[str, Any]:
    """What re-creates a row that no attempt has used yet (its id aside)."""
    return {
        field.attname: getattr(row, field.attname)
        for field in Message._meta.concrete_fields
        if not field.primary_key
    }


def notice(session: ChatSession, key: str, **values: object) -> Message:
    return to_user(session, kind=Kind.NOTICE, text=notice_text(key, session.language, **values))


def end_chat(session: ChatSession, thread_id: str = "") -> None:
    session.state = State.ENDED
    session.save(update_fields=["state", "updated_at"])
    to_user(
        session,
        kind=Kind.END,
        text=notice_text("ended", session.language),
        livechat_thread_id=thread_id or session.thread_id,
    )
