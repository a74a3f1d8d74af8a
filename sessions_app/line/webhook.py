"""The LINE webhook: the signature, checked on the raw body, and the events read from the raw JSON.

The SDK's signature validator is used; its event parser is not, because it turns several valid,
documented events into `UnknownEvent` and drops their fields."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

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


# What an agent reads for a message, or before its content is fetched (image, video, audio, file).
PLACEHOLDERS = {
    "image": "[image]",
    "video": "[video]",
    "audio": "[audio]",
    "file": "[file]",
    "sticker": "[sticker]",
    "location": "[location]",
}
MEDIA_TYPES = frozenset({"image", "video", "audio", "file"})

# Unofficial: LINE documents no sticker image URL for bots. This is the address its sticker shop
# serves each sticker's still image from; used as a courtesy link for STATIC stickers only.
STICKER_IMAGE_URL = (
    "https://stickershop.line-scdn.net/stickershop/v1/sticker/{sticker_id}/android/sticker.png"
)
MAP_URL = "https://www.google.com/maps/search/?api=1&query={latitude},{longitude}"


def sticker_text(message: dict[str, Any]) -> str:
    """`[sticker]` with what the sticker says (its text, or LINE's keywords for it)."""
    keywords = message.get("keywords")
    words = [str(word) for word in keywords if word] if isinstance(keywords, list) else []
    label = str(message.get("text") or "") or ", ".join(words[:5])
    lines = [f"[sticker] {label}".strip()]
    if message.get("stickerResourceType") == "STATIC" and message.get("stickerId"):
        lines.append(STICKER_IMAGE_URL.format(sticker_id=quote(str(message["stickerId"]), safe="")))
    return "\n".join(lines)


def location_text(message: dict[str, Any]) -> str:
    """`[location]` with its title, address and a map link."""
    title = str(message.get("title") or "").strip()
    lines = [f"[location] {title}".strip()]
    if message.get("address"):
        lines.append(str(message["address"]))
    latitude, longitude = message.get("latitude"), message.get("longitude")
    if _is_number(latitude) and _is_number(longitude):
        lines.append(MAP_URL.format(latitude=latitude, longitude=longitude))
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
        """The message as an agent should read it. For media this is the label of the file (or
        of the note that replaces it); the content itself is fetched when it is delivered."""
        message = self.message
        kind = self.message_type
        if kind == "text":
            return str(message.get("text", ""))
        if kind == "file" and message.get("fileName"):
            return f"[file] {message['fileName']}"
        if kind == "image" and isinstance(message.get("imageSet"), dict):
            image_set = message["imageSet"]
            if image_set.get("index") and image_set.get("total"):
                return f"[image {image_set['index']}/{image_set['total']}]"
        if kind == "location":
            return location_text(message)
        if kind == "sticker":
            return sticker_text(message)
        return PLACEHOLDERS.get(kind, f"[{kind or 'message'}]")


def parse(body: bytes) -> tuple[str, list[LineEvent]]:
    """(destination, events), the events in the order they happened."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # or nested too deeply
        raise InvalidBody("malformed JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise InvalidBody("`events` must be a list")
    events = [event_from(raw) for raw in data["events"] if isinstance(raw, dict)]
    # LINE promises no order across deliveries; within one, order by when they happened.
    events.sort(key=lambda e: e.timestamp)
    return str(data.get("destination", "")), events


def event_from(raw: dict[str, Any]) -> LineEvent:
    """One event of a webhook body (as LINE sent it, or as the inbox kept it)."""
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
