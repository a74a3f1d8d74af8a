"""The story of a conversation, vendor-neutral: a user opens a chat, a user said, an agent said,
the chat ended, the user closed it. Webhooks and the JSON API call the `user_*`/`agent_*`
functions (cheap, local, inside one transaction); the delivery worker calls `deliver_*`."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from . import media
from .line import client as line_client
from .line import errors as line_errors
from .line.errors import LineError
from .line.webhook import LineEvent, event_from
from .livechat import webhooks as livechat_webhooks
from .livechat.customer_api import CustomerChatAPI, filled_prechat_form
from .livechat.errors import ChatInactive, LiveChatError, PermanentError
from .livechat.tokens import SessionCustomer
from .livechat.webhooks import LiveChatEvent
from .models import UNKNOWN_CHAT, UNSEND_BEFORE_MESSAGE, ChatSession, InboundEvent, Message
from .notices import notice_text

logger = logging.getLogger(__name__)

State = ChatSession.State
Kind = Message.Kind


# --- sessions ----------------------------------------------------------------------------


def session_get_or_create(*, line_id: str, delivery_mode: str) -> ChatSession:
    try:
        with transaction.atomic():
            session, _ = ChatSession.objects.get_or_create(
                line_id=line_id, defaults={"delivery_mode": delivery_mode}
            )
    except IntegrityError:  # created by a concurrent request a moment ago
        session = ChatSession.objects.get(line_id=line_id)
    return session


def livechat_api(session: ChatSession) -> CustomerChatAPI:
    return CustomerChatAPI(SessionCustomer(session))


class _Duplicate(Exception):
    pass


def inbound_once(
    *, source: str, event_id: str, event_type: str, payload: dict[str, Any], apply: Any
) -> str:
    """Apply a vendor event unless its id was seen before; returns what was done.

    The work and the record of the id are one savepoint: a redelivery racing the first delivery
    rolls its own work back instead of relaying twice."""
    try:
        with transaction.atomic():
            outcome = apply()
            try:
                with transaction.atomic():
                    InboundEvent.objects.create(
                        source=source,
                        event_id=event_id[:128],
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


# --- the user's side -----------------------------------------------------------------------


def user_open_chat(
    *,
    line_id: str,
    display_name: str = "",
    session_fields: list[dict[str, str]] | None = None,
    delivery_mode: str = ChatSession.DeliveryMode.PULL,
) -> bool:
    """Open (or resume) the user's LiveChat chat now; the JSON API's /init. False if LiveChat
    could not be reached or refused.

    What the client sent (`session_fields`, from prechatEntities) becomes customer session fields
    and, when the group has a pre-chat form, the answers of that form at the chat's start."""
    session = session_get_or_create(line_id=line_id, delivery_mode=delivery_mode)
    session.delivery_mode = delivery_mode
    if display_name:
        session.display_name = display_name
    session.save(update_fields=["delivery_mode", "display_name", "updated_at"])
    # A /close the worker has not carried out yet would end the chat this call opens (it is put
    # back when the chat cannot be opened).
    closes = _cancel_waiting(
        session, Message.Route.LIVECHAT, "the user opened the chat again", Kind.CLOSE
    )
    if delivery_mode == ChatSession.DeliveryMode.PUSH:
        # Pushed notices speak the user's language: learn it before the first one.
        _fill_in_profile(session)
    api = livechat_api(session)
    fields = _session_fields(session) + list(session_fields or [])
    answers = {key: str(value) for field in session_fields or [] for key, value in field.items()}
    known_chat, known_thread = session.chat_id, session.thread_id
    try:
        api.update_customer(
            name=session.display_name,
            avatar=session.picture_url or None,
            session_fields=fields[:100],
        )
        started = None
        if not session.chat_id:
            started = _start_chat(api, session, events=[], answers=answers)
        if started is not None:
            session.chat_id = started["chat_id"]
            session.thread_id = started.get("thread_id", "")
        else:
            thread = api.get_chat(chat_id=session.chat_id).get("thread") or {}
            session.thread_id = thread.get("id") or session.thread_id
            if not thread.get("active"):
                answer = api.resume_chat(
                    chat_id=session.chat_id, events=[], group_id=settings.LIVECHAT_GROUP_ID
                )
                session.thread_id = answer.get("thread_id", "")
    except LiveChatError as exc:
        logger.warning("open chat failed session=%s error=%s", session.pk, exc)
        _uncancel(closes, "the user opened the chat again")
        return False
    # The end of an earlier thread, not yet handed out, would end the one just opened for the
    # client that reads it. An end of this very thread, come meanwhile, stays.
    _cancel_waiting(
        session, session.route_to_user, "a new chat was opened", Kind.END, session.thread_id
    )
    _record_chat(session, known_chat, known_thread)
    return True


def _cancel_waiting(
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


def _uncancel(ids: list[int], reason: str) -> None:
    """Put back what `_cancel_waiting` cancelled for `reason`."""
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


def user_closed(*, session: ChatSession) -> None:
    """The user (or their client) ended the chat: end it on LiveChat too, after what is queued."""
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
            user_said(session=session, text="", kind=Kind.CLOSE)
        session.state = State.ENDED
        session.save(update_fields=["state", "updated_at"])


# --- the agent's side ----------------------------------------------------------------------


def to_user(session: ChatSession, *, kind: str, text: str, **fields: Any) -> Message:
    return Message.objects.create(
        session=session,
        direction=Message.Direction.TO_USER,
        route=session.route_to_user,
        kind=kind,
        body=text,
        **fields,
    )


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
    )


def _apply(event: LiveChatEvent) -> str:
    session = _session_for_chat(event)
    if event.legacy:
        if event.kind == "legacy_chat_ended" and session and session.state != State.ENDED:
            _end(session)
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
    if event.kind == "chat_deactivated":
        if event.thread_id and session.thread_id and event.thread_id != session.thread_id:
            return "old thread"
        if session.state == State.ENDED:
            return "already ended"
        _end(session, event.thread_id)
        return "chat ended"
    if event.kind == "incoming_chat":
        outcome = _chat_started(session, event)
        # Its chat may be new to the bridge: what came for it before is applied now.
        _apply_parked(session)
        return outcome
    if event.kind == "agent_added":
        if _thread_over(session, event):
            return "ignored: the thread has ended"
        if session.state == State.WITH_AGENT and session.agent_name == event.agent_name:
            return "agent already in the chat"  # announced by incoming_chat already
        session.state = State.WITH_AGENT
        session.agent_name = event.agent_name
        session.save(update_fields=["state", "agent_name", "updated_at"])
        _notice(session, "agent_joined", name=event.agent_name)
        return "agent joined"
    if event.kind == "chat_transferred":
        if session.state == State.ENDED:
            # An archived chat moved to another group (LiveChat sends it without a thread): the
            # user was told the chat ended, and it opens again only when they write.
            return "ignored: transfer of an ended chat"
        session.state = State.QUEUED if event.queue_position is not None else State.OPEN
        session.save(update_fields=["state", "updated_at"])
        if event.queue_position is not None:
            _notice(session, "transferred_position", position=event.queue_position)
        else:
            _notice(session, "transferred")
        return "transferred"
    return "ignored"


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
        _notice(session, "queued_position", position=event.queue_position)
    elif event.agent_name:
        session.state = State.WITH_AGENT
        session.agent_name = event.agent_name
        _notice(session, "agent_joined", name=event.agent_name)
    else:
        # Started with nobody assigned yet (messaging mode): the user still hears it arrived.
        session.state = State.OPEN
        _notice(session, "queued")
    session.save(update_fields=["chat_id", "thread_id", "state", "agent_name", "updated_at"])
    return "chat started"


# How long a LiveChat event for a chat the bridge does not know waits for it to be recorded: the
# worker records a chat it started as soon as LiveChat answers, or a few retries later when
# that answer was lost.
PARKED_SECONDS = 15 * 60


def _apply_parked(session: ChatSession) -> None:
    """Apply the LiveChat events that came for the session's chat before the bridge knew the chat
    was this user's (a bot's greeting can outrun start_chat's answer), in the order they came."""
    if not session.chat_id:
        return
    parked = InboundEvent.objects.filter(
        source=InboundEvent.Source.LIVECHAT,
        outcome=UNKNOWN_CHAT,
        received_at__gte=timezone.now() - timedelta(seconds=PARKED_SECONDS),
        payload__payload__chat_id=session.chat_id,
    ).order_by("id")
    for record in parked:
        try:
            with transaction.atomic():
                # Claimed first: the webhook and the worker may both have just learnt the chat.
                claimed = InboundEvent.objects.filter(pk=record.pk, outcome=UNKNOWN_CHAT).update(
                    outcome="applying"
                )
                if claimed:
                    outcome = _apply(livechat_webhooks.parse(record.payload))
                    InboundEvent.objects.filter(pk=record.pk).update(outcome=outcome[:64])
        except (OperationalError, InterfaceError):
            raise
        except Exception:  # a bug must not undo what the caller has done
            logger.exception("applying a parked LiveChat event failed event=%s", record.pk)


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
        _apply_parked(session)


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


def _notice(session: ChatSession, key: str, **values: object) -> Message:
    return to_user(session, kind=Kind.NOTICE, text=notice_text(key, session.language, **values))


def _end(session: ChatSession, thread_id: str = "") -> None:
    session.state = State.ENDED
    session.save(update_fields=["state", "updated_at"])
    to_user(
        session,
        kind=Kind.END,
        text=notice_text("ended", session.language),
        livechat_thread_id=thread_id or session.thread_id,
    )


# --- pull delivery (/messages) -------------------------------------------------------------


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


# --- delivery to LiveChat (called by the worker) --------------------------------------------


def deliver_to_agent(message: Message) -> None:
    """Carry one queued user message (or close/unsend action) into the user's LiveChat chat.
    Raises a LiveChatError when it could not; the worker decides on retrying."""
    session = message.session
    api = livechat_api(session)
    if message.kind == Kind.CLOSE:
        if session.chat_id:
            try:
                api.deactivate_chat(chat_id=session.chat_id)
            except ChatInactive:
                pass  # already ended: what the user wanted
        return
    if message.kind == Kind.UNSEND:
        _delete_unsent(api, message)
        return
    if message.uncertain and _already_in_chat(api, session, message):
        return
    if not session.customer_id:
        _fill_in_profile(session)
        _create_customer(api, session)
    elif _profile_missing(session) and _fill_in_profile(session):
        _name_customer(api, session)
    # Media is fetched from LINE and uploaded here, in the worker, never in the webhook.
    event = media.agent_event(message, api)
    chat_id_before, thread_id_before = session.chat_id, session.thread_id
    answer = _start_chat(api, session, events=[event]) if not session.chat_id else None
    if answer is not None:
        session.chat_id = answer["chat_id"]
    else:
        try:
            answer = api.send_event(chat_id=session.chat_id, event=event)
            answer = {"thread_id": session.thread_id, "event_ids": [answer.get("event_id", "")]}
        except ChatInactive:
            answer = api.resume_chat(
                chat_id=session.chat_id, events=[event], group_id=settings.LIVECHAT_GROUP_ID
            )
    session.thread_id = answer.get("thread_id") or session.thread_id
    _record_chat(session, chat_id_before, thread_id_before)
    message.livechat_chat_id = session.chat_id
    message.livechat_thread_id = session.thread_id
    # The user's event is the last of the initial events (a filled pre-chat form comes first).
    message.livechat_event_id = (answer.get("event_ids") or [""])[-1]


def _record_chat(session: ChatSession, chat_id_before: str, thread_id_before: str) -> None:
    """Keep the chat and thread a message went to, or /init opened (`session`'s, against what
    they were before). Written only when they changed, and the state opened only from new or
    ended, and not when this thread's end has come meanwhile: webhooks may have changed the state
    while LiveChat answered (an `incoming_chat` says queued or with-agent)."""
    updates: dict[str, Any] = {}
    if session.chat_id != chat_id_before:
        updates["chat_id"] = session.chat_id
    if session.thread_id != thread_id_before:
        updates["thread_id"] = session.thread_id
    if not updates and session.state not in (State.NEW, State.ENDED):
        return
    now = timezone.now()
    if updates:
        ChatSession.objects.filter(pk=session.pk).update(**updates, updated_at=now)
    ended = session.thread_id and (
        session.messages.filter(kind=Kind.END, livechat_thread_id=session.thread_id).exists()
    )
    if not ended and ChatSession.objects.filter(
        pk=session.pk, state__in=[State.NEW, State.ENDED]
    ).update(state=State.OPEN, updated_at=now):
        session.state = State.OPEN
    if "chat_id" in updates:
        _apply_parked(session)


def _create_customer(api: CustomerChatAPI, session: ChatSession) -> None:
    """First contact: create the LiveChat customer and tell agents who it is."""
    api.credentials.renew()
    _name_customer(api, session)


def _name_customer(api: CustomerChatAPI, session: ChatSession) -> None:
    """Tell agents who the customer is. Best effort: a failure here must not make the user's
    message wait or be sent twice."""
    try:
        api.update_customer(
            name=session.display_name or None,
            avatar=session.picture_url or None,
            session_fields=_session_fields(session),
        )
    except LiveChatError as exc:
        logger.warning("naming the customer failed session=%s error=%s", session.pk, exc)


def _session_fields(session: ChatSession) -> list[dict[str, str]]:
    """Who the customer is, for the agent's customer details. (Chat properties would need a
    namespace registered for the app; LiveChat documents none for this, so session fields it is.)"""
    fields = [{"line_id": session.line_id}, {"source": "LINE"}]
    if session.display_name:
        fields.append({"display_name": session.display_name})
    if session.language:
        fields.append({"language": session.language})
    return fields


def _start_chat(
    api: CustomerChatAPI,
    session: ChatSession,
    *,
    events: list[dict[str, Any]],
    answers: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """start_chat; None when LiveChat says the customer has a chat already and it is found
    again (its id is then `session.chat_id`, not yet saved).

    A customer has one chat. We lose its id when the database fails between LiveChat's answer
    and our save: /init was then answered 503, and its retry, like every later message, would be
    refused for good."""
    try:
        return _start_new_chat(api, session, events=events, answers=answers)
    except PermanentError as exc:
        if exc.error_type != "validation" or not _found_lost_chat(api, session):
            raise
        logger.warning("found the customer's chat again session=%s", session.pk)
        return None


def _found_lost_chat(api: CustomerChatAPI, session: ChatSession) -> bool:
    """The customer's chat, looked up on LiveChat, into `session.chat_id` and `thread_id` (not
    saved)."""
    if not session.customer_id:
        return False
    chats = api.list_chats(limit=1).get("chats_summary") or []
    chat_id = chats[0].get("id", "") if chats else ""
    if chat_id:
        session.chat_id = chat_id
        # The Customer Chat API's summary names its thread `last_thread_id`; without a thread id
        # the messages sent into the chat could not be removed on an unsend.
        session.thread_id = chats[0].get("last_thread_id") or (
            (api.get_chat(chat_id=chat_id).get("thread") or {}).get("id", "")
        )
    return bool(chat_id)


def _start_new_chat(
    api: CustomerChatAPI,
    session: ChatSession,
    *,
    events: list[dict[str, Any]],
    answers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """start_chat, with the group's pre-chat form answered first when the group has one."""
    form = _filled_prechat_form(api, session, answers or {})
    if form is None:
        return api.start_chat(events=events, group_id=settings.LIVECHAT_GROUP_ID)
    try:
        return api.start_chat(events=[form, *events], group_id=settings.LIVECHAT_GROUP_ID)
    except PermanentError as exc:
        if exc.error_type != "validation":
            raise
        # How strictly LiveChat checks a filled form against its form is not documented: the
        # user's message matters more than the form, so it goes without.
        logger.warning("pre-chat form refused session=%s error=%s", session.pk, exc)
        return api.start_chat(events=events, group_id=settings.LIVECHAT_GROUP_ID)


def _filled_prechat_form(
    api: CustomerChatAPI, session: ChatSession, answers: dict[str, str]
) -> dict[str, Any] | None:
    """The group's pre-chat form answered with what we know; one get_form per chat start, and
    None when there is no form or LiveChat could not say (best effort: the chat starts anyway)."""
    if not settings.LIVECHAT_PRECHAT_FORM:
        return None
    group_id = settings.LIVECHAT_GROUP_ID if settings.LIVECHAT_GROUP_ID is not None else 0
    try:
        answer = api.get_form(group_id=group_id, form_type="prechat")
    except LiveChatError as exc:
        logger.info("no pre-chat form session=%s error=%s", session.pk, exc)
        return None
    if not isinstance(answer, dict) or not answer.get("enabled"):
        return None
    form = answer.get("form")
    if not isinstance(form, dict):
        return None
    return filled_prechat_form(
        form,
        name=session.display_name,
        line_id=session.line_id,
        answers=answers,
        custom_id=f"bridge-form-{uuid.uuid4()}",
    )


def _already_in_chat(api: CustomerChatAPI, session: ChatSession, message: Message) -> bool:
    """After an attempt whose outcome we never saw: did LiveChat take it? (custom_id is ours)."""
    if not session.chat_id and _found_lost_chat(api, session):
        session.save(update_fields=["chat_id", "thread_id", "updated_at"])
        _apply_parked(session)
    if not session.chat_id:
        return False
    chat = api.get_chat(chat_id=session.chat_id)
    thread = chat.get("thread") or {}
    for event in thread.get("events") or []:
        if event.get("custom_id") == message.custom_id:
            session.thread_id = thread.get("id", session.thread_id)
            session.save(update_fields=["thread_id", "updated_at"])
            message.livechat_chat_id = session.chat_id
            message.livechat_thread_id = session.thread_id
            message.livechat_event_id = event.get("id", "")
            return True
    return False


def _delete_unsent(api: CustomerChatAPI, action: Message) -> None:
    """The user unsent a message that had already reached LiveChat: remove it there too."""
    target = Message.objects.filter(pk=action.payload.get("message_id")).first()
    if target is None or not target.livechat_event_id or target.payload.get("unsent"):
        return
    # After a lost answer the delete may have been made: a second one would be refused as an
    # unknown event, and the removal the user asked for marked failed although it happened.
    if not action.uncertain or _event_in_thread(api, target):
        api.delete_event(
            chat_id=target.livechat_chat_id,
            thread_id=target.livechat_thread_id,
            event_id=target.livechat_event_id,
        )
    target.payload = {**target.payload, "unsent": True}
    target.save(update_fields=["payload"])


def _event_in_thread(api: CustomerChatAPI, message: Message) -> bool:
    chat = api.get_chat(chat_id=message.livechat_chat_id, thread_id=message.livechat_thread_id)
    events = (chat.get("thread") or {}).get("events") or []
    return any(event.get("id") == message.livechat_event_id for event in events)


def _fill_in_profile(session: ChatSession) -> bool:
    """Name, picture and language from LINE, before the agent first sees the user and before the
    first notice (which is worded in the profile's language); True when LINE gave them. Best
    effort: a blocked user (404) or a LINE hiccup must not hold the user's message back. A name
    a /init client gave wins."""
    if session.delivery_mode != ChatSession.DeliveryMode.PUSH:
        return False
    if session.display_name and session.language:
        return False
    try:
        profile = line_client.get_profile(session.line_id)
    except LineError as exc:
        logger.info("no LINE profile session=%s error=%s", session.pk, exc)
        return False
    session.display_name = session.display_name or str(profile.get("displayName") or "")[:255]
    session.picture_url = str(profile.get("pictureUrl") or "")[:1000]
    session.language = str(profile.get("language") or "")[:16]
    session.save(update_fields=["display_name", "picture_url", "language", "updated_at"])
    return True


def _profile_missing(session: ChatSession) -> bool:
    """LINE's profile was not had at first contact (a LINE outage): the agent sees no name, and
    the notices are not in the user's language. Every profile has a name, so this is rare."""
    return not session.display_name and not session.language


# --- LINE: the webhook's events -------------------------------------------------------------


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
            for record in _by_timestamp(batch):
                record.outcome = _apply_line(event_from(record.payload))[:64]
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
                outcome = _apply_line(event_from(record.payload))
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


def _by_timestamp(records: list[InboundEvent]) -> list[InboundEvent]:
    """LINE keeps no order between deliveries: the events taken together go by their timestamp
    (a stable sort, so arrival order breaks ties)."""
    return sorted(records, key=_timestamp)


def _timestamp(record: InboundEvent) -> int:
    value = record.payload.get("timestamp") if isinstance(record.payload, dict) else None
    return value if isinstance(value, int) else 0


def _apply_line(event: LineEvent) -> str:
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
            text=event.readable_text(),
            kind=kind,
            payload={"line_message": event.message},
            source_event_id=event.event_id,
            line_message_id=line_message_id,
        )
        if _unsent_before_it_came(line_message_id) and _stop_unsent(message):
            return "unsent: stopped"
        return "relayed"
    session = ChatSession.objects.filter(line_id=event.user_id).first()
    if event.type == "follow":
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
        _cancel_waiting(session, Message.Route.LINE_PUSH, "the user blocked the account")
        if session.state != State.ENDED:
            user_closed(session=session)
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


def _unsent_before_it_came(line_message_id: str) -> bool:
    return (
        bool(line_message_id)
        and InboundEvent.objects.filter(
            source=InboundEvent.Source.LINE,
            event_type="unsend",
            outcome=UNSEND_BEFORE_MESSAGE,
            payload__unsend__messageId=line_message_id,
        ).exists()
    )


# --- delivery to LINE by push (called by the worker) ----------------------------------------


def line_messages_for(message: Message) -> list[dict[str, Any]]:
    """The LINE message objects that carry one queued item to the user. Only what is on the row
    decides it, so that a retry is the identical request LINE's retry key expects."""
    if message.kind == Kind.FILE and message.direction == Message.Direction.TO_USER:
        image = media.line_image(message.payload)
        if image is not None:
            return [image]
    return line_client.text_messages(message.body)[: line_client.MAX_MESSAGES_PER_REQUEST]


def push_batch(rows: Sequence[Message]) -> list[Message]:
    """Which of the leased rows go in one push. Fixed at the first attempt and kept on the head
    row, so that every retry with the head's retry key is the identical request LINE expects."""
    head = rows[0]
    if head.payload.get("reply_token"):
        return [head]
    recorded = head.payload.get("push_batch")
    if recorded:
        return [row for row in rows if row.pk in set(recorded)]
    batch: list[Message] = []
    count = 0
    for row in rows:
        if row.payload.get("reply_token"):
            break
        size = len(line_messages_for(row))
        if batch and count + size > line_client.MAX_MESSAGES_PER_REQUEST:
            break
        batch.append(row)
        count += size
    head.payload = {**head.payload, "push_batch": [row.pk for row in batch]}
    Message.objects.filter(pk=head.pk).update(payload=head.payload)
    return batch


# A reply token is valid for a minute from its event; 10 s of that allowed for clocks that differ.
REPLY_TOKEN_TRUSTED_SECONDS = 50


def _reply_token_unexpired(payload: dict[str, Any]) -> bool:
    issued = payload.get("reply_token_at")
    return isinstance(issued, int | float) and time.time() - issued < REPLY_TOKEN_TRUSTED_SECONDS


def deliver_to_user(batch: Sequence[Message]) -> None:
    """Push (or, for a fresh follow, reply) a batch of queued items to one LINE user."""
    head = batch[0]
    per_row = [line_messages_for(row) for row in batch]
    messages = [obj for row_messages in per_row for obj in row_messages]
    reply_token = head.payload.get("reply_token")
    if reply_token:
        try:
            line_client.reply(reply_token, messages)
            return
        except LineError as exc:
            if exc.retryable:
                raise
            if head.uncertain and _reply_token_unexpired(head.payload):
                # Refused while it was still valid, so it was used: by the reply whose answer was
                # lost (a reply takes no retry key). The user has the greeting; a push would
                # double it.
                logger.info("reply token already used by an unanswered reply message=%s", head.pk)
                return
            # The token expired (LINE answers the same): the greeting matters more than the quota.
    try:
        result = line_client.push(head.session.line_id, messages, retry_key=str(head.retry_key))
    except LineError as exc:
        if exc.retryable or len(batch) == 1:
            raise
        # LINE refused the batch, which it never accepted: find the culprit by sending the head
        # alone next, so one bad message does not take the others down with it.
        head.payload = {**head.payload, "push_batch": [head.pk]}
        Message.objects.filter(pk=head.pk).update(payload=head.payload)
        raise line_errors.RetryableError(f"batch refused, retrying one by one: {exc}") from exc
    # One row may have become several message objects (a split text): each keeps its first id.
    sent = iter(result.sent_message_ids)
    for row, row_messages in zip(batch, per_row, strict=True):
        ids = [message_id for _, message_id in zip(row_messages, sent, strict=False)]
        if ids:
            row.line_message_id = ids[0]
