"""A conversation's rows: its session, what the user said (for the agent), what is queued for
the user, a vendor event applied once, and the pull client's hand-out. Cheap and local: the
webhooks and the JSON API call these inside their own transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..models import IDEMPOTENCY_KEY_PREFIX, ChatSession, InboundEvent, Message

State = ChatSession.State
Kind = Message.Kind


def session_get_or_create(*, line_id: str, delivery_mode: str) -> ChatSession:
    # Found, as it is for every message but a user's first: without the savepoint that the
    # create needs, two round trips fewer for each message the worker takes from the inbox.
    try:
        return ChatSession.objects.get(line_id=line_id)
    except ChatSession.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            return ChatSession.objects.create(line_id=line_id, delivery_mode=delivery_mode)
    except IntegrityError:  # created by a concurrent request a moment ago
        return ChatSession.objects.get(line_id=line_id)


class _Duplicate(Exception):
    pass


def inbound_once(
    *,
    source: str,
    event_id: str,
    event_type: str,
    payload: dict[str, Any],
    apply: Any,
    repeat_after: timedelta | None = None,
) -> str:
    """Apply a vendor event unless its id was seen before; returns what was done.

    The work and the record of the id are one savepoint: a redelivery racing the first delivery
    rolls its own work back instead of relaying twice. With `repeat_after`, an id seen longer ago
    than that is a new event; each occurrence is kept under the id with `#2`, `#3`… appended."""
    key: str | None = event_id[:128]
    if repeat_after is not None:
        key = _occurrence_key(source, key, timezone.now() - repeat_after)
        if key is None:
            return "duplicate"
    try:
        with transaction.atomic():
            outcome = apply()
            try:
                with transaction.atomic():
                    InboundEvent.objects.create(
                        source=source,
                        event_id=key,
                        event_type=event_type[:64],
                        payload=payload,
                        outcome=outcome[:64],
                        applied_at=timezone.now(),
                    )
            except IntegrityError as exc:
                raise _Duplicate from exc
    except _Duplicate:
        return "duplicate"
    return outcome


def _occurrence_key(source: str, key: str, redelivered_since: datetime) -> str | None:
    """The id of a new occurrence of `key`, or None when its latest one is recent enough for
    this to be a redelivery of it."""
    occurrence = 1
    while True:
        candidate = key if occurrence == 1 else f"{key[:120]}#{occurrence}"
        seen = (
            InboundEvent.objects.filter(source=source, event_id=candidate)
            .values_list("received_at", flat=True)
            .first()
        )
        if seen is None:
            return candidate
        if seen >= redelivered_since:
            return None
        occurrence += 1


def cancel_waiting(
    session: ChatSession, route: str, reason: str, kind: str = "", keep_thread: str = ""
) -> list[int]:
    """Cancel the session's rows on `route` (of `kind`, when given; not those of `keep_thread`)
    that no worker has taken; returns the ids looked at."""
    rows = session.messages.filter(route=route, status=Message.Status.PENDING, leased_until=None)
    if kind:
        rows = rows.filter(kind=kind)
    if keep_thread:
        rows = rows.exclude(livechat_thread_id=keep_thread)
    ids = list(rows.values_list("pk", flat=True))
    # Checked again: a worker may have leased one since.
    Message.objects.filter(pk__in=ids, status=Message.Status.PENDING, leased_until=None).update(
        status=Message.Status.CANCELLED, last_error=reason
    )
    return ids


def uncancel(ids: list[int], reason: str) -> None:
    """Put back what `cancel_waiting` cancelled for `reason`."""
    Message.objects.filter(pk__in=ids, status=Message.Status.CANCELLED, last_error=reason).update(
        status=Message.Status.PENDING, last_error=""
    )


def user_said(
    *,
    session: ChatSession,
    text: str,
    kind: str = Kind.TEXT,
    payload: dict[str, Any] | None = None,
    source_event_id: str = "",
    line_message_id: str = "",
) -> Message:
    """Queue what the user said for the agent. Durable once this returns."""
    return Message.objects.create(
        session=session,
        direction=Message.Direction.TO_AGENT,
        route=Message.Route.LIVECHAT,
        kind=kind,
        body=text,
        payload=payload or {},
        source_event_id=source_event_id,
        line_message_id=line_message_id,
    )


_SOURCE_ID_LENGTH = Message._meta.get_field("source_event_id").max_length
IDEMPOTENCY_KEY_MAX_LENGTH = _SOURCE_ID_LENGTH - len(IDEMPOTENCY_KEY_PREFIX)


class IdempotencyKeyReused(Exception):
    """The key came before with another text: a client's bug, not a retry."""


def user_said_once(*, session: ChatSession, text: str, key: str) -> bool:
    """Queue `text` for the agent unless this session's client sent it under `key` before (its
    retry of a `/send` whose answer it never got). True when queued now."""
    source_event_id = IDEMPOTENCY_KEY_PREFIX + key
    earlier = session.messages.filter(source_event_id=source_event_id).first()
    if earlier is None:
        try:
            with transaction.atomic():
                user_said(session=session, text=text, source_event_id=source_event_id)
            return True
        except IntegrityError:  # the same retry, in a request running at the same time
            earlier = session.messages.get(source_event_id=source_event_id)
    if earlier.body != text:
        raise IdempotencyKeyReused(key)
    return False


def user_closed(*, session: ChatSession, note: str = "", source_event_id: str = "") -> None:
    """The user (or their client) ended the chat: end it on LiveChat too, after what is queued,
    and after `note` for the agent, when given."""
    with transaction.atomic():
        # What the agent side queued for a pull client that has said goodbye would be handed to
        # its next chat as if it were new.
        session.messages.filter(route=Message.Route.API_PULL, status=Message.Status.PENDING).update(
            status=Message.Status.CANCELLED, last_error="closed by the user"
        )
        if (
            session.chat_id
            or session.messages.filter(
                route=Message.Route.LIVECHAT, status=Message.Status.PENDING
            ).exists()
        ):
            if note:
                user_said(
                    session=session, text=note, kind=Kind.OTHER, source_event_id=source_event_id
                )
            user_said(session=session, text="", kind=Kind.CLOSE)
        session.state = State.ENDED
        session.save(update_fields=["state", "updated_at"])


def to_user(session: ChatSession, *, kind: str, text: str, **fields: Any) -> Message:
    return Message.objects.create(
        session=session,
        direction=Message.Direction.TO_USER,
        route=session.route_to_user,
        kind=kind,
        body=text,
        **fields,
    )


def pull_next(*, session: ChatSession) -> Message | None:
    """Hand out the oldest undelivered item of a pull session, once."""
    while True:
        candidate = (
            session.messages.filter(route=Message.Route.API_PULL, status=Message.Status.PENDING)
            .order_by("id")
            .first()
        )
        if candidate is None:
            return None
        # Compare-and-set: two concurrent polls of one line_id never get the same item.
        taken = Message.objects.filter(pk=candidate.pk, status=Message.Status.PENDING).update(
            status=Message.Status.SENT, sent_at=timezone.now(), attempts=1
        )
        if taken:
            return candidate
