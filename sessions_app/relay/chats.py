"""The user's LiveChat chat: the customer who has it, starting it (with the pre-chat form),
finding it again when its id was lost, opening it for /init, and recording the chat and thread
a message went to. The LINE profile that names the customer is read here too."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from ..line import client as line_client
from ..line.errors import LineError, NotFound
from ..livechat.customer_api import CustomerChatAPI, filled_prechat_form
from ..livechat.errors import LiveChatError, PermanentError
from ..livechat.tokens import SessionCustomer
from ..models import ChatSession, Message
from .livechat_events import apply_end_heard_early, apply_parked
from .mailbox import cancel_waiting, session_get_or_create, uncancel

logger = logging.getLogger(__name__)

State = ChatSession.State
Kind = Message.Kind

# How long a profile LINE refused (the user is not a friend) is not asked for again, unless the
# user follows the account meanwhile: asked at every message, it was a LINE call per text.
PROFILE_REFUSED_FOR = timedelta(days=1)


def livechat_api(session: ChatSession) -> CustomerChatAPI:
    return CustomerChatAPI(SessionCustomer(session))


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
    closes = cancel_waiting(
        session, Message.Route.LIVECHAT, "the user opened the chat again", Kind.CLOSE
    )
    if delivery_mode == ChatSession.DeliveryMode.PUSH:
        # Pushed notices speak the user's language: learn it before the first one.
        fill_in_profile(session)
    api = livechat_api(session)
    fields = _customer_fields(session) + list(session_fields or [])
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
            started = start_chat(api, session, events=[], answers=answers)
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
        uncancel(closes, "the user opened the chat again")
        return False
    # The end of an earlier thread, not yet handed out, would end the one just opened for the
    # client that reads it. An end of this very thread, come meanwhile, stays.
    cancel_waiting(
        session, session.route_to_user, "a new chat was opened", Kind.END, session.thread_id
    )
    record_chat(session, known_chat, known_thread)
    return True


def record_chat(
    session: ChatSession,
    chat_id_before: str,
    thread_id_before: str,
    *,
    said: Message | None = None,
) -> None:
    """Keep the chat and thread a message went to, or /init opened (`session`'s, against what
    they were before). Written only when they changed, and the state opened only from new or
    ended, and not when this thread's end has come meanwhile: webhooks may have changed the state
    while LiveChat answered (an `incoming_chat` says queued or with-agent). Nor when the user
    closed the chat after saying `said` (a last word before `/close`, the note of an unfollow),
    even while LiveChat was answering: the close is about to end that chat, and LiveChat's news
    of the end would be announced to the user who left. (An `/init` since has called it off.)"""
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
    reopening = ChatSession.objects.filter(pk=session.pk, state__in=[State.NEW, State.ENDED])
    if said is not None:
        closed_after = Message.objects.filter(
            session=OuterRef("pk"), kind=Kind.CLOSE, status=Message.Status.PENDING, pk__gt=said.pk
        )
        reopening = reopening.exclude(Exists(closed_after))
    if not ended and reopening.update(state=State.OPEN, updated_at=now):
        session.state = State.OPEN
    if "chat_id" in updates:
        apply_parked(session)
    if "thread_id" in updates:
        apply_end_heard_early(session)


def create_customer(api: CustomerChatAPI, session: ChatSession) -> None:
    """First contact: create the LiveChat customer and tell agents who it is."""
    api.credentials.renew()
    name_customer(api, session)


def name_customer(api: CustomerChatAPI, session: ChatSession) -> None:
    """Tell agents who the customer is. Best effort: a failure here must not make the user's
    message wait or be sent twice."""
    try:
        api.update_customer(
            name=session.display_name or None,
            avatar=session.picture_url or None,
            session_fields=_customer_fields(session),
        )
    except LiveChatError as exc:
        logger.warning("naming the customer failed session=%s error=%s", session.pk, exc)


def _customer_fields(session: ChatSession) -> list[dict[str, str]]:
    """Who the customer is, for the agent's customer details. (Chat properties would need a
    namespace registered for the app; LiveChat documents none for this, so session fields it is.)"""
    fields = [{"line_id": session.line_id}, {"source": "LINE"}]
    if session.display_name:
        fields.append({"display_name": session.display_name})
    if session.language:
        fields.append({"language": session.language})
    return fields


def start_chat(
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
        if exc.error_type != "validation" or not found_lost_chat(api, session):
            raise
        logger.warning("found the customer's chat again session=%s", session.pk)
        return None


def found_lost_chat(api: CustomerChatAPI, session: ChatSession) -> bool:
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


def fill_in_profile(session: ChatSession) -> bool:
    """Name, picture and language from LINE, before the agent first sees the user and before the
    first notice (which is worded in the profile's language); True when LINE gave them. Best
    effort: a blocked user (404) or a LINE hiccup must not hold the user's message back. A name
    a /init client gave wins."""
    if session.delivery_mode != ChatSession.DeliveryMode.PUSH:
        return False
    if session.display_name and session.language:
        return False
    now = timezone.now()
    if session.profile_refused_at and now - session.profile_refused_at < PROFILE_REFUSED_FOR:
        return False
    try:
        profile = line_client.get_profile(session.line_id)
    except LineError as exc:
        logger.info("no LINE profile session=%s error=%s", session.pk, exc)
        if isinstance(exc, NotFound):  # not an outage, which is asked again at the next message
            session.profile_refused_at = now
            session.save(update_fields=["profile_refused_at", "updated_at"])
        return False
    session.display_name = session.display_name or str(profile.get("displayName") or "")[:255]
    session.picture_url = str(profile.get("pictureUrl") or "")[:1000]
    session.language = str(profile.get("language") or "")[:16]
    session.profile_refused_at = None
    session.save(
        update_fields=[
            "display_name",
            "picture_url",
            "language",
            "profile_refused_at",
            "updated_at",
        ]
    )
    return True


def profile_missing(session: ChatSession) -> bool:
    """LINE's profile was not had at first contact (a LINE outage): the agent sees no name, and
    the notices are not in the user's language. Every profile has a name, so this is rare."""
    return not session.display_name and not session.language
