"""LiveChat webhooks, read into the bridge's own small event objects.

Two formats arrive at the same URL: the 3.6 envelope (`action`, `payload`, `secret_key`) and the
legacy v2 payloads of the seeds (`event_type`, `token`)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime


class InvalidWebhook(ValueError):
    """The body is not a LiveChat webhook at all."""


@dataclass(frozen=True)
class LiveChatEvent:
    """One webhook, normalised.

    kind is one of: message, file, system_message, chat_deactivated, incoming_chat, agent_added,
    chat_transferred, seen, legacy_chat_started, legacy_chat_ended, legacy_ticket_created, other."""

    kind: str
    action: str
    dedupe_id: str
    # The id is a digest of the payload, not one LiveChat gave the event: the same payload may
    # come again later as a new event (an agent added back, a chat transferred back).
    content_keyed: bool = True
    chat_id: str = ""
    thread_id: str = ""
    author_id: str = ""
    visibility: str = "all"
    custom_id: str = ""
    event_id: str = ""
    text: str = ""
    agent_name: str = ""
    customer_ids: tuple[str, ...] = ()
    queue_position: int | None = None
    said_at: datetime | None = None  # an incoming_event's `created_at`
    seen_up_to: datetime | None = None  # events_marked_as_seen's
    # A rich message's buttons that answer with their own words (`type: message`), in order.
    quick_replies: tuple[str, ...] = ()
    file: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def legacy(self) -> bool:
        return self.kind.startswith("legacy_")


def secret_matches(expected: str, given: Any) -> bool:
    """Constant-time comparison; an unset secret matches nothing."""
    if not expected or not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def presented_secret(body: dict[str, Any]) -> Any:
    """The credential the sender put in the body: `secret_key` (3.6) or `token` (legacy v2)."""
    return body["secret_key"] if "secret_key" in body else body.get("token")


def parse(body: Any) -> LiveChatEvent:
    if not isinstance(body, dict):
        raise InvalidWebhook("the body is not a JSON object")
    if "action" in body:
        return _parse_v36(body)
    if "event_type" in body:
        return _parse_legacy(body)
    raise InvalidWebhook("neither `action` (3.6) nor `event_type` (legacy v2) is present")


def _elements(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    elements = event.get("elements")
    for element in elements if isinstance(elements, list) else []:
        if isinstance(element, dict):
            yield element


def _buttons(element: dict[str, Any]) -> Iterator[dict[str, Any]]:
    buttons = element.get("buttons")
    for button in buttons if isinstance(buttons, list) else []:
        if isinstance(button, dict):
            yield button


def rich_message_text(event: dict[str, Any]) -> str:
    """A rich message's titles, subtitles, images' addresses and buttons, one per line (a link
    button with its address)."""
    lines: list[str] = []
    for element in _elements(event):
        lines += [str(element[k]) for k in ("title", "subtitle") if element.get(k)]
        image = element.get("image")
        if isinstance(image, dict) and isinstance(image.get("url"), str) and image["url"]:
            lines.append(image["url"])
        for button in _buttons(element):
            if button.get("text"):
                link = button.get("value") if button.get("type") in ("url", "webview") else ""
                lines.append(f"- {button['text']}" + (f": {link}" if link else ""))
    return "\n".join(lines) or "[rich message]"


def rich_message_replies(event: dict[str, Any]) -> tuple[str, ...]:
    """The words of a rich message's buttons that answer with them (`type: message`): what a
    customer tapping one says in LiveChat's own widget. Each once, in order."""
    replies: dict[str, None] = {}
    for element in _elements(event):
        for button in _buttons(element):
            text = str(button.get("text") or "").strip()
            if button.get("type") == "message" and text:
                replies[text] = None
    return tuple(replies)


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def _parse_v36(body: dict[str, Any]) -> LiveChatEvent:
    action = str(body.get("action", ""))
    payload = body.get("payload")
    if not isinstance(payload, dict):
        raise InvalidWebhook("`payload` must be an object")
    # Only incoming_event carries an id of its own; for the rest the payload itself is the identity.
    dedupe_id = f"{action}:{_digest(payload)}"
    common = {"action": action, "raw": body, "dedupe_id": dedupe_id}

    if action == "incoming_event":
        event = payload.get("event")
        if not isinstance(event, dict):
            raise InvalidWebhook("`payload.event` must be an object")
        event_type = str(event.get("type", ""))
        kind = event_type if event_type in {"message", "file", "system_message"} else "other"
        text = event.get("text", "")
        quick_replies: tuple[str, ...] = ()
        if event_type == "rich_message":
            # Cards and quick replies from an agent or a bot: their words, as a text. The buttons
            # that answer with their own words can also be offered as LINE's quick replies.
            kind, text = "message", rich_message_text(event)
            quick_replies = rich_message_replies(event)
        return LiveChatEvent(
            kind=kind,
            **{
                **common,
                "dedupe_id": str(event.get("id") or dedupe_id),
                "content_keyed": not event.get("id"),
            },
            chat_id=str(payload.get("chat_id", "")),
            thread_id=str(payload.get("thread_id", "")),
            author_id=str(event.get("author_id", "")),
            visibility=str(event.get("visibility", "all")),
            custom_id=str(event.get("custom_id", "")),
            event_id=str(event.get("id", "")),
            text=str(text),
            quick_replies=quick_replies,
            said_at=_datetime(event.get("created_at")),
            file={
                k: event[k]
                for k in ("url", "name", "content_type", "size", "thumbnail_url", "width", "height")
                if k in event
            },
        )
    if action == "chat_deactivated":
        return LiveChatEvent(
            kind="chat_deactivated",
            **common,
            chat_id=str(payload.get("chat_id", "")),
            thread_id=str(payload.get("thread_id", "")),
            author_id=str(payload.get("user_id", "")),
        )
    if action == "incoming_chat":
        chat = payload.get("chat") if isinstance(payload.get("chat"), dict) else {}
        thread = chat.get("thread") if isinstance(chat.get("thread"), dict) else {}
        users = [u for u in chat.get("users", []) if isinstance(u, dict)]
        agents = [u for u in users if u.get("type") == "agent"]
        return LiveChatEvent(
            kind="incoming_chat",
            **common,
            chat_id=str(chat.get("id", "")),
            thread_id=str(thread.get("id", "")),
            customer_ids=tuple(str(u.get("id")) for u in users if u.get("type") == "customer"),
            agent_name=str(agents[0].get("name", "")) if agents else "",
            queue_position=_queue_position(thread.get("queue")),
        )
    if action == "user_added_to_chat":
        user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
        kind = "agent_added" if user.get("type") == "agent" else "other"
        return LiveChatEvent(
            kind=kind,
            **common,
            chat_id=str(payload.get("chat_id", "")),
            thread_id=str(payload.get("thread_id", "")),
            author_id=str(user.get("id", "")),
            agent_name=str(user.get("name") or user.get("id") or ""),
        )
    if action == "chat_transferred":
        return LiveChatEvent(
            kind="chat_transferred",
            **common,
            chat_id=str(payload.get("chat_id", "")),
            thread_id=str(payload.get("thread_id", "")),
            queue_position=_queue_position(payload.get("queue")),
        )
    if action == "events_marked_as_seen":
        return LiveChatEvent(
            kind="seen",
            **common,
            chat_id=str(payload.get("chat_id", "")),
            author_id=str(payload.get("user_id", "")),
            seen_up_to=_datetime(payload.get("seen_up_to")),
        )
    return LiveChatEvent(kind="other", **common, chat_id=str(payload.get("chat_id", "")))


def _datetime(value: Any) -> datetime | None:
    try:
        return parse_datetime(value) if isinstance(value, str) else None
    except ValueError:  # well formed but out of range, e.g. month 13
        return None


def _queue_position(queue: Any) -> int | None:
    if isinstance(queue, dict) and isinstance(queue.get("position"), int):
        return queue["position"]
    return None


def _parse_legacy(body: dict[str, Any]) -> LiveChatEvent:
    event_type = str(body.get("event_type", ""))
    chat = body.get("chat") if isinstance(body.get("chat"), dict) else {}
    kinds = {
        "chat_started": "legacy_chat_started",
        "chat_ended": "legacy_chat_ended",
        "ticket_created": "legacy_ticket_created",
    }
    unique = body.get("event_unique_id") or _digest(body)
    return LiveChatEvent(
        kind=kinds.get(event_type, "other"),
        action=event_type,
        dedupe_id=f"{event_type}:{unique}",
        content_keyed=not body.get("event_unique_id"),
        chat_id=str(chat.get("id", "")),
        raw=body,
    )
