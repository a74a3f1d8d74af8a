"""Media across the bridge, both ways (called by relay in the delivery worker).

To the agent: an image, video, audio or file a LINE user sent is fetched from LINE, uploaded to
LiveChat and sent as a `file` event; what cannot be (gone, too large, hosted elsewhere, never
ready) becomes a readable note instead, so the agent always sees that something was sent.

To the user: an agent's JPEG or PNG becomes a LINE image message; any other file, a link."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.utils import timezone

from .line import client as line_client
from .line import content as line_content
from .line.errors import ContentGone, ContentNotReady, ContentTooLarge
from .livechat.customer_api import CustomerChatAPI, file_event, message_event
from .livechat.errors import PermanentError
from .models import Message

logger = logging.getLogger(__name__)

MEDIA_KINDS = frozenset(
    {Message.Kind.IMAGE, Message.Kind.VIDEO, Message.Kind.AUDIO, Message.Kind.FILE}
)
# LiveChat keeps an upload that no event uses for 24 h; a retry reuses ours well within that.
UPLOAD_REUSE_SECONDS = 20 * 3600


def is_media(message: Message) -> bool:
    return message.direction == Message.Direction.TO_AGENT and message.kind in MEDIA_KINDS


def readable_size(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} bytes"
    return f"{size / (1024 * 1024):.1f} MB"


# --- LINE → LiveChat -------------------------------------------------------------------------


def agent_event(message: Message, api: CustomerChatAPI) -> dict[str, Any]:
    """The LiveChat event that carries one queued user message to the agent.

    Raises ContentNotReady (retryable) while LINE is still preparing the content, within
    LINE_CONTENT_MAX_WAIT_SECONDS of the message's arrival."""
    if not is_media(message):
        return message_event(message.body, custom_id=message.custom_id)
    line_message = message.payload.get("line_message") or {}
    label = message.body or f"[{message.kind}]"

    def note(text: str) -> dict[str, Any]:
        return message_event(text, custom_id=message.custom_id)

    provider = line_message.get("contentProvider") or {}
    if provider.get("type") == "external":
        # The user's app sent a link to content hosted elsewhere; LINE has nothing to download.
        return note(f"{label} {provider.get('originalContentUrl') or ''}".strip())

    uploaded = message.payload.get("uploaded") or {}
    if uploaded.get("url") and time.time() - uploaded.get("at", 0) < UPLOAD_REUSE_SECONDS:
        return file_event(uploaded["url"], custom_id=message.custom_id)

    limit = settings.LIVECHAT_UPLOAD_MAX_BYTES
    declared = line_message.get("fileSize")
    if isinstance(declared, int) and declared > limit:
        # LINE told us the size: no need to start a download we would throw away.
        return note(_too_large(label, line_content.file_name(line_message), declared, exact=True))
    if not message.line_message_id:
        return note(label)
    try:
        content = line_content.fetch(message.line_message_id, max_bytes=limit)
    except ContentGone:
        return note(f"{label} (no longer available on LINE)")
    except ContentTooLarge as exc:
        name = line_content.file_name(line_message, exc.content_type)
        return note(_too_large(label, name, exc.size, exact=exc.exact))
    except ContentNotReady:
        waited = (timezone.now() - message.created_at).total_seconds()
        if waited < settings.LINE_CONTENT_MAX_WAIT_SECONDS:
            raise
        return note(f"{label} (LINE was still preparing it; not forwarded)")

    name = line_content.file_name(line_message, content.content_type)
    try:
        url = api.upload_file(name=name, data=content.data, content_type=content.content_type)
    except PermanentError as exc:
        if exc.error_type != "entity_too_large" and exc.status != 413:
            raise
        return note(_too_large(label, name, len(content.data), exact=True))
    # Kept on the row so that a retry of the send neither downloads nor uploads again (LINE may
    # have dropped the content by then).
    message.payload = {**message.payload, "uploaded": {"url": url, "at": time.time()}}
    Message.objects.filter(pk=message.pk).update(payload=message.payload)
    return file_event(url, custom_id=message.custom_id)


def _too_large(label: str, name: str, size: int, *, exact: bool) -> str:
    size_text = readable_size(size) if exact else f"over {readable_size(size)}"
    named = label if name in label else f"{label} {name}"
    limit = readable_size(settings.LIVECHAT_UPLOAD_MAX_BYTES)
    return f"{named} ({size_text}): too large to forward, LiveChat takes files up to {limit}"


# --- LiveChat → LINE -------------------------------------------------------------------------


def line_image(file: dict[str, Any]) -> dict[str, str] | None:
    """A LINE image message for an agent's file, when LINE can show it as one: JPEG or PNG, at
    most 10 MB, on HTTPS. The preview is LiveChat's thumbnail when there is one; otherwise the
    image itself, which LINE may fail to preview when it is over 1 MB (LINE's preview limit)."""
    content_type = str(file.get("content_type") or "").split(";")[0].strip().lower()
    size = file.get("size")
    url = file.get("url")
    if (
        content_type not in line_client.IMAGE_CONTENT_TYPES
        or not isinstance(size, int)
        or size > line_client.MAX_IMAGE_BYTES
        or not line_client.usable_image_url(url)
    ):
        return None
    thumbnail = file.get("thumbnail_url")
    preview = thumbnail if line_client.usable_image_url(thumbnail) else url
    return line_client.image_message(url, preview)
