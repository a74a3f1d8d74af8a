"""LINE's webhook events, applied by the worker from the inbox the webhook wrote: messages,
follow, unfollow, unsend and postbacks, in the order they happened."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from ..line.webhook import LineEvent, event_from
from ..models import UNSEND_BEFORE_MESSAGE, ChatSession, InboundEvent, Message
from .mailbox import cancel_waiting, session_get_or_create, to_user, user_closed, user_said

logger = logging.getLogger(__name__)

State = ChatSession.State
Kind = Message.Kind

# What the agent reads, as the customer's last message, when a LINE user blocks the account.
UNFOLLOW_NOTE = "[unfollow] The user blocked the LINE account: answers here no longer reach them."


def apply_line_inbox(limit: int = 10) -> int:
    """Apply up to `limit` LINE events waiting in the inbox, oldest first, in one transaction;
    returns how many were applied.

    The transaction holds the events it takes (row locks on Postgres, the write lock on SQLite),
    so with several workers an event is applied once, and no event overtakes an older one of the
    same user. `limit` bounds how long that hold keeps a webhook's insert waiting."""
    # A plain read first: on SQLite the transaction below takes the write lock, which an empty
    # inbox should not take from the webhooks several times a second.
    if not _line_inbox_waiting().exists():
        return 0
    try:
        with transaction.atomic():
            batch = _inbox_head(limit)
            unsent = _unsent_before_they_came()
            for record in _by_timestamp(batch):
                record.outcome = _apply_line(event_from(record.payload), unsent)[:64]
                record.applied_at = timezone.now()
            InboundEvent.objects.bulk_update(batch, ["outcome", "applied_at"])
            return len(batch)
    except (OperationalError, InterfaceError):
        raise  # the database is away: the loop waits and the events stay in the inbox
    except Exception:
        logger.warning("applying LINE events together failed; applying them one by one")
    # One event the bridge cannot apply (a bug) must not hold every later one back: alone, each
    # is applied or parked with its error.
    applied = 0
    for _ in range(limit):
        record: InboundEvent | None = None
        try:
            with transaction.atomic():
                batch = _by_timestamp(_inbox_head(limit))
                if not batch:
                    break
                record = batch[0]
                outcome = _apply_line(event_from(record.payload), _unsent_before_they_came())
                InboundEvent.objects.filter(pk=record.pk).update(
                    outcome=outcome[:64], applied_at=timezone.now()
                )
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            if record is None:
                raise
            logger.exception("applying a LINE event failed event=%s", record.event_id)
            InboundEvent.objects.filter(pk=record.pk, applied_at__isnull=True).update(
                outcome=f"error: {type(exc).__name__}"[:64], applied_at=timezone.now()
            )
        applied += 1
    return applied


def _line_inbox_waiting():  # -> QuerySet[InboundEvent]
    return InboundEvent.objects.filter(source=InboundEvent.Source.LINE, applied_at__isnull=True)


def _inbox_head(limit: int) -> list[InboundEvent]:
    return list(_line_inbox_waiting().select_for_update().order_by("id")[:limit])


# How much of a quoted message the agent sees in front of the reply to it.
QUOTE_SHOWN = 60


def _with_quote(session: ChatSession, message: dict[str, object], text: str) -> str:
    """The user's reply to an earlier message (LINE's `quotedMessageId`), with which one it
    answers in front: customers' events in LiveChat cannot quote, so the agent would read an
    answer without its question."""
    quoted_id = message.get("quotedMessageId")
    if not quoted_id:
        return text
    quoted = session.messages.filter(line_message_id=str(quoted_id)).first()
    if quoted is None or not quoted.body:
        return f"[reply to an earlier message]\n{text}"
    body = quoted.body
    if body.startswith("[reply to ") and "\n" in body:
        body = body.split("\n", 1)[1]  # a reply to a reply: only its own words
    words = " ".join(body.split())
    if len(words) > QUOTE_SHOWN:
        words = words[: QUOTE_SHOWN - 1] + "…"
    return f"[reply to “{words}”]\n{text}"


def _by_timestamp(records: list[InboundEvent]) -> list[InboundEvent]:
    """LINE keeps no order between deliveries: the events taken together go by their timestamp
    (a stable sort, so arrival order breaks ties)."""
    return sorted(records, key=_timestamp)


def _timestamp(record: InboundEvent) -> int:
    value = record.payload.get("timestamp") if isinstance(record.payload, dict) else None
    return value if isinstance(value, int) else 0


def _apply_line(event: LineEvent, unsent_before_they_came: set[str]) -> str:
    if not event.from_user:
        return f"ignored: {event.source_type or 'unknown'} source"
    if event.mode == "standby":
        return "ignored: standby"
    if event.type == "message":
        session = session_get_or_create(
            line_id=event.user_id, delivery_mode=ChatSession.DeliveryMode.PUSH
        )
        kind = event.message_type if event.message_type in Kind.values else Kind.OTHER
        line_message_id = str(event.message.get("id", ""))
        message = user_said(
            session=session,
            text=_with_quote(session, event.message, event.readable_text()),
            kind=kind,
            payload={"line_message": event.message},
            source_event_id=event.event_id,
            line_message_id=line_message_id,
        )
        if line_message_id in unsent_before_they_came and _stop_unsent(message):
            return "unsent: stopped"
        return "relayed"
    session = ChatSession.objects.filter(line_id=event.user_id).first()
    if event.type == "follow":
        if session is not None and session.profile_refused_at:
            # A friend now: LINE gives the profile that it refused.
            ChatSession.objects.filter(pk=session.pk).update(profile_refused_at=None)
            session.profile_refused_at = None
        greeting = settings.LINE_FOLLOW_GREETING
        if not greeting:
            return "followed"
        session = session or session_get_or_create(
            line_id=event.user_id, delivery_mode=ChatSession.DeliveryMode.PUSH
        )
        # By reply, which is free; a follow that came without a reply token is greeted by push.
        payload = (
            {"reply_token": event.reply_token, "reply_token_at": event.timestamp / 1000}
            if event.reply_token
            else {}
        )
        to_user(session, kind=Kind.NOTICE, text=greeting, payload=payload)
        return "greeted"
    if event.type == "unsend":
        return _unsend(session, str((event.raw.get("unsend") or {}).get("messageId", "")))
    if event.type == "postback":
        # A tap on a rich menu or a button may be how a user first asks for help.
        session = session or session_get_or_create(
            line_id=event.user_id, delivery_mode=ChatSession.DeliveryMode.PUSH
        )
        postback = event.raw.get("postback") or {}
        text = f"[postback] {postback.get('data', '')}"
        params = postback.get("params")
        if isinstance(params, dict) and params:
            # What the user picked (a date, a time, a rich menu), which `data` does not carry.
            text += " (" + ", ".join(f"{key}: {value}" for key, value in params.items()) + ")"
        user_said(
            session=session,
            text=text,
            kind=Kind.OTHER,
            payload={"postback": event.raw.get("postback")},
            source_event_id=event.event_id,
        )
        return "relayed"
    if session is None:
        return f"ignored: {event.type} of an unknown user"
    if event.type == "unfollow":
        # LINE delivers no push to a user who blocked the account; what waits for a retry would
        # only reach them, out of place, if they unblock.
        for route in (Message.Route.LINE_PUSH, Message.Route.LINE_READ):
            cancel_waiting(session, route, "the user blocked the account")
        if session.state != State.ENDED:
            # With the note, the agent sees not only that the customer left but that an answer
            # given elsewhere (a call, an email) is now the only way to reach them.
            user_closed(session=session, note=UNFOLLOW_NOTE, source_event_id=event.event_id)
        return "closed: unfollowed"
    return f"ignored: {event.type}"


def _unsend(session: ChatSession | None, line_message_id: str) -> str:
    """Stop the message if it has not left yet; otherwise remove it on LiveChat, in turn. An
    unsend that came first (even before the user's first message) is kept for the message."""
    if not line_message_id:
        return "ignored: unsend of an unknown message"
    target = (
        session.messages.filter(
            line_message_id=line_message_id, direction=Message.Direction.TO_AGENT
        ).first()
        if session is not None
        else None
    )
    if target is None:
        return UNSEND_BEFORE_MESSAGE
    if _stop_unsent(target):
        return "unsent: stopped"
    # Queued behind the original in the same mailbox, so it runs only once that one is sent.
    user_said(session=session, text="", kind=Kind.UNSEND, payload={"message_id": target.pk})
    return "unsent: removal queued"


def _stop_unsent(message: Message) -> bool:
    """Cancel the user's message if it has not left (nor is leaving) for LiveChat yet."""
    return bool(
        Message.objects.filter(
            pk=message.pk, status=Message.Status.PENDING, leased_until=None
        ).update(status=Message.Status.CANCELLED, last_error="unsent by the user")
    )


def _unsent_before_they_came() -> set[str]:
    """The LINE ids of messages whose unsend came first, and waits for them (few, if any). Read
    once for the events applied together: asked for each message, the JSON lookup took over a
    quarter of the worker's time for a message from the inbox (Python's and Postgres's planning)."""
    ids = InboundEvent.objects.filter(
        source=InboundEvent.Source.LINE, event_type="unsend", outcome=UNSEND_BEFORE_MESSAGE
    ).values_list("payload__unsend__messageId", flat=True)
    return {str(value) for value in ids if value}
