"""The LINE Messaging API through line-bot-sdk: push, reply, read marks, profiles, messages.

One ApiClient per process and configuration (the SDK's client pools connections); every call has
a timeout, which the SDK does not set by default."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import urllib3
from django.conf import settings
from linebot.v3.messaging import (
    ApiClient,
    ApiException,
    Configuration,
    MarkMessagesAsReadByTokenRequest,
    MessagingApi,
    PushMessageRequest,
    ReplyMessageRequest,
)

from ..db_pool import release_connection
from .errors import NotConfigured, NotFound, OutcomeUnknown, PermanentError, RetryableError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# LINE counts a text's length in UTF-16 code units.
MAX_TEXT_UNITS = 5000
MAX_MESSAGES_PER_REQUEST = 5
# Image messages: LINE fetches the URLs itself (HTTPS only). Its "10 MB" is taken as decimal
# megabytes, the stricter reading, so that nothing we push is refused for a few bytes. (Previews
# should be at most 1 MB; callers choose a thumbnail where they have one.)
MAX_IMAGE_BYTES = 10_000_000
MAX_URL_LENGTH = 2000
# Quick reply buttons: at most 13 to a message; a label of at most 20 characters (counted here in
# UTF-16 units, the stricter reading), and at most 300 in the text a tap sends.
MAX_QUICK_REPLIES = 13
MAX_QUICK_REPLY_LABEL = 20
MAX_QUICK_REPLY_TEXT = 300
IMAGE_CONTENT_TYPES = frozenset({"image/jpeg", "image/png"})


@lru_cache(maxsize=8)
def _messaging_api(host: str, access_token: str) -> MessagingApi:
    configuration = Configuration(host=host, access_token=access_token)
    # No silent urllib3 retries: the delivery worker owns retrying, with the same retry key.
    configuration.retries = False
    return MessagingApi(ApiClient(configuration))


def messaging_api() -> MessagingApi:
    if not settings.LINE_CHANNEL_ACCESS_TOKEN:
        raise NotConfigured("LINE is not configured: set LINE_CHANNEL_ACCESS_TOKEN")
    return _messaging_api(
        settings.LINE_API_BASE_URL.rstrip("/"), settings.LINE_CHANNEL_ACCESS_TOKEN
    )


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT_UNITS) -> list[str]:
    """Pieces of at most `limit` UTF-16 units, never cutting a surrogate pair."""
    pieces: list[str] = []
    current: list[str] = []
    units = 0
    for char in text:
        size = 2 if ord(char) > 0xFFFF else 1
        if units + size > limit:
            pieces.append("".join(current))
            current, units = [], 0
        current.append(char)
        units += size
    if current or not pieces:
        pieces.append("".join(current))
    return pieces


def text_messages(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": piece} for piece in split_text(text)]


def _shortened(text: str) -> str:
    return split_text(text, MAX_QUICK_REPLY_LABEL - 1)[0] + "…"


def _shortened_in_the_middle(text: str) -> str:
    head = (MAX_QUICK_REPLY_LABEL - 1) // 2
    tail = split_text(text[::-1], MAX_QUICK_REPLY_LABEL - 1 - head)[0][::-1]
    return split_text(text, head)[0] + "…" + tail


def quick_reply(texts: Sequence[str]) -> dict[str, Any] | None:
    """LINE's quick reply buttons that each send their own text when tapped; a text LINE would
    refuse to send is left out, a label too long is shortened."""
    texts = [t for t in texts if t and utf16_units(t) <= MAX_QUICK_REPLY_TEXT][:MAX_QUICK_REPLIES]
    labels = [t if utf16_units(t) <= MAX_QUICK_REPLY_LABEL else _shortened(t) for t in texts]
    # Choices that differ only after their first 19 characters ("… delivery date", "… delivery
    # address") would get the same label: the user could not tell them apart, so those keep
    # their ends too.
    labels = [
        _shortened_in_the_middle(text) if label != text and labels.count(label) > 1 else label
        for text, label in zip(texts, labels, strict=True)
    ]
    items = [
        {"type": "action", "action": {"type": "message", "label": label, "text": text}}
        for text, label in zip(texts, labels, strict=True)
    ]
    return {"items": items} if items else None


def image_message(original_url: str, preview_url: str) -> dict[str, str]:
    return {"type": "image", "originalContentUrl": original_url, "previewImageUrl": preview_url}


def usable_image_url(url: Any) -> bool:
    """Whether LINE can fetch an image from this URL: HTTPS, and not longer than LINE allows."""
    return isinstance(url, str) and url.startswith("https://") and len(url) <= MAX_URL_LENGTH


@dataclass(frozen=True)
class PushResult:
    sent_message_ids: list[str]
    request_id: str
    already_accepted: bool = False


def _header(headers: Any, name: str) -> str:
    if not headers:
        return ""
    for key, value in dict(headers).items():
        if key.lower() == name:
            return str(value)
    return ""


def request_timeout() -> tuple[float, float]:
    return tuple(settings.VENDOR_TIMEOUT)  # type: ignore[return-value]


def raise_line_error(exc: Exception) -> None:
    """Translate what the SDK and urllib3 raise into our errors (always raises)."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        request_id = _header(exc.headers, "x-line-request-id")
        try:
            detail = json.loads(exc.body or b"{}").get("message", "")
        except (ValueError, AttributeError):
            detail = ""
        detail = detail or (exc.reason or "")
        if status == 0:  # the SDK's own wrapping of TLS and protocol errors
            raise RetryableError(detail, status=None) from exc
        # 401/403: a wrong or revoked token the operator will replace; keep the messages.
        if status in (401, 403, 429) or status >= 500:
            raise RetryableError(detail, status=status, request_id=request_id) from exc
        if status == 404:
            raise NotFound(detail, status=status, request_id=request_id) from exc
        raise PermanentError(detail, status=status, request_id=request_id) from exc
    if isinstance(
        exc, urllib3.exceptions.ConnectTimeoutError | urllib3.exceptions.NewConnectionError
    ):
        raise RetryableError(f"cannot connect: {exc}") from exc
    if isinstance(exc, urllib3.exceptions.HTTPError):
        # Read timeout or a dropped connection: LINE may have accepted the request.
        raise OutcomeUnknown(f"no answer: {exc}") from exc
    raise exc


def push(to: str, messages: list[dict[str, Any]], *, retry_key: str) -> PushResult:
    """Push up to five messages to one user. A repeat of an accepted retry key counts as sent."""
    request = PushMessageRequest.from_dict({"to": to, "messages": messages})
    release_connection()
    try:
        response = messaging_api().push_message_with_http_info(
            request, x_line_retry_key=retry_key, _request_timeout=request_timeout()
        )
    except ApiException as exc:
        if exc.status == 409:
            accepted = _header(exc.headers, "x-line-accepted-request-id")
            logger.info("line push already accepted retry_key=%s request=%s", retry_key, accepted)
            try:
                sent = json.loads(exc.body or b"{}").get("sentMessages") or []
            except ValueError:
                sent = []
            return PushResult([str(m.get("id", "")) for m in sent], accepted, True)
        raise_line_error(exc)
        raise
    except Exception as exc:
        raise_line_error(exc)
        raise
    sent = response.data.sent_messages if response.data else []
    return PushResult([m.id for m in sent], _header(response.headers, "x-line-request-id"))


def _call(method: Callable[..., T], *args: Any) -> T:
    """One LINE call with the configured timeout, the thread's pooled database connection given
    back meanwhile, and what the SDK raises turned into our errors."""
    release_connection()
    try:
        return method(*args, _request_timeout=request_timeout())
    except Exception as exc:
        raise_line_error(exc)
        raise


def reply(reply_token: str, messages: list[dict[str, Any]]) -> None:
    request = ReplyMessageRequest.from_dict({"replyToken": reply_token, "messages": messages})
    _call(messaging_api().reply_message_with_http_info, request)


def mark_as_read(mark_as_read_token: str) -> None:
    """Show the user's message that carried this token, and every one before it, as read."""
    request = MarkMessagesAsReadByTokenRequest(mark_as_read_token=mark_as_read_token)
    _call(messaging_api().mark_messages_as_read_by_token_with_http_info, request)


def get_profile(user_id: str) -> dict[str, Any]:
    """The user's LINE profile (displayName, pictureUrl, language, ...)."""
    return _call(messaging_api().get_profile, user_id).to_dict()
