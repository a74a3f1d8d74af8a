"""Delivery to LiveChat, called by the worker: a user's message, a close, an unsend, carried into
the user's chat (started or resumed as needed)."""

from __future__ import annotations

from django.conf import settings

from .. import media
from ..livechat.customer_api import CustomerChatAPI
from ..livechat.errors import ChatInactive
from ..models import ChatSession, Message
from .chats import (
    create_customer,
    fill_in_profile,
    found_lost_chat,
    livechat_api,
    name_customer,
    profile_missing,
    record_chat,
    start_chat,
)
from .livechat_events import apply_parked

Kind = Message.Kind


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
        fill_in_profile(session)
        create_customer(api, session)
    elif profile_missing(session) and fill_in_profile(session):
        name_customer(api, session)
    # Media is fetched from LINE and uploaded here, in the worker, never in the webhook.
    event = media.agent_event(message, api)
    chat_id_before, thread_id_before = session.chat_id, session.thread_id
    answer = start_chat(api, session, events=[event]) if not session.chat_id else None
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
    record_chat(session, chat_id_before, thread_id_before, said=message)
    message.livechat_chat_id = session.chat_id
    message.livechat_thread_id = session.thread_id
    # The user's event is the last of the initial events (a filled pre-chat form comes first).
    message.livechat_event_id = (answer.get("event_ids") or [""])[-1]


def _already_in_chat(api: CustomerChatAPI, session: ChatSession, message: Message) -> bool:
    """After an attempt whose outcome we never saw: did LiveChat take it? (custom_id is ours)."""
    if not session.chat_id and found_lost_chat(api, session):
        session.save(update_fields=["chat_id", "thread_id", "updated_at"])
        apply_parked(session)
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
