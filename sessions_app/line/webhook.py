"""The LINE webhook: the signature, checked on the raw body, and the events read from the raw JSON.

The SDK's signature validator is used; its event parser is not, because it turns several valid,
documented events into `UnknownEvent` and drops their fields."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from linebot.v3.webhook import SignatureValidator


class InvalidSignature(Exception):
    pass


class InvalidBody(ValueError):
    pass


def verify(channel_secret: str, body: bytes, signature: str | None) -> None:
    """Raise InvalidSignature unless `signature` is the body's HMAC with the channel secret."""
    if not channel_secret or not signature:
        raise InvalidSignature("missing signature")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSignature("body is not UTF-8") from exc
    if not SignatureValidator(channel_secret).validate(text, signature):
        raise InvalidSignature("signature does not match")


# What an agent reads for a message LiveChat cannot show as it is (yet).
PLACEHOLDERS = {
    "image": "[image]",
    "video": "[video]",
    "audio": "[audio]",
    "file": "[file]",
    "sticker": "[sticker]",
    "location": "[location]",
}


@dataclass(frozen=True)
class LineEvent:
    type: str
    event_id: str
    timestamp: int
    mode: str
    source_type: str
    user_id: str
    reply_token: str = ""
    message: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def from_user(self) -> bool:
        return self.source_type == "user" and bool(self.user_id)

    @property
    def message_type(self) -> str:
        return str(self.message.get("type", ""))

    def readable_text(self) -> str:
        """The message as an agent should read it."""
        message = self.message
        kind = self.message_type
        if kind == "text":
            return str(message.get("text", ""))
        if kind == "file" and message.get("fileName"):
            return f"[file] {message['fileName']}"
        if kind == "location":
            parts = [str(message.get(k)) for k in ("title", "address") if message.get(k)]
            return " ".join(["[location]", *parts]).strip()
        if kind == "sticker":
            words = message.get("keywords") or []
            label = message.get("text") or ", ".join(words[:5])
            return f"[sticker] {label}".strip()
        return PLACEHOLDERS.get(kind, f"[{kind or 'message'}]")


def parse(body: bytes) -> tuple[str, list[LineEvent]]:
    """(destination, events), the events in the order they happened."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBody("malformed JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise InvalidBody("`events` must be a list")
    events = [_event(raw) for raw in data["events"] if isinstance(raw, dict)]
    # LINE promises no order across deliveries; within one, order by when they happened.
    events.sort(key=lambda e: e.timestamp)
    return str(data.get("destination", "")), events


def _event(raw: dict[str, Any]) -> LineEvent:
    source = raw.get("source") if isinstance(raw.get("source"), dict) else {}
    message = raw.get("message") if isinstance(raw.get("message"), dict) else {}
    timestamp = raw.get("timestamp")
    return LineEvent(
        type=str(raw.get("type", "")),
        event_id=str(raw.get("webhookEventId", "")),
        timestamp=timestamp if isinstance(timestamp, int) else 0,
        mode=str(raw.get("mode", "active")),
        source_type=str(source.get("type", "")),
        user_id=str(source.get("userId", "")),
        reply_token=str(raw.get("replyToken", "")),
        message=message,
        raw=raw,
    )
