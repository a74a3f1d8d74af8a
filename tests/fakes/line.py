"""A fake LINE Messaging API (api.line.me and api-data.line.me) and a LINE-style webhook sender.

The fake answers the way /work/shared/reference/line.md says the real platform does, so that the
bridge's retry, idempotency and error handling meet realistic answers in tests: the retry key is
remembered once accepted, injected failures deliver nothing, slow answers deliver before sleeping,
trickled answers send their headers at once and their body a little at a time.

Usage::

    with FakeLine() as line:                     # or FakeLine().start() ... .stop()
        line.webhook_url = live_server.url + "/line/webhook"
        line.profiles["U1"] = {"displayName": "Taro", "userId": "U1"}
        event = line.user_says("U1", "hello")
        line.post_events([redelivered(event)])   # the same event again, as LINE redelivers it
        assert line.wait_for(lambda: line.texts_for("U1"))
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "AUTH_FAILED",
    "DEFAULT_DESTINATION",
    "Call",
    "FakeLine",
    "base_event",
    "follow_event",
    "image_event",
    "new_webhook_event_id",
    "redelivered",
    "sign",
    "text_event",
    "unfollow_event",
    "unsend_event",
]

AUTH_FAILED = (
    "Authentication failed. Confirm that the access token in the authorization header is valid."
)
DEFAULT_DESTINATION = "Udeadbeefdeadbeefdeadbeefdeadbeef"
MAX_TEXT_UTF16 = 5000
MAX_MESSAGES = 5
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_URL_LENGTH = 2000
MAX_QUICK_REPLY_ITEMS = 13
MAX_QUICK_REPLY_LABEL = 20
MAX_QUICK_REPLY_TEXT = 300
QUICK_REPLY_ACTIONS = (
    "message",
    "postback",
    "uri",
    "datetimepicker",
    "camera",
    "cameraRoll",
    "location",
    "clipboard",
)

MESSAGE_TYPES = (
    "text",
    "textV2",
    "image",
    "video",
    "audio",
    "location",
    "sticker",
    "imagemap",
    "template",
    "flex",
)
# The real platform accepts any hex UUID; it does not insist on version 4.
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

_DEFAULT_MESSAGES = {
    400: "Bad Request",
    401: AUTH_FAILED,
    403: "Access to this API is not available for your account",
    404: "Not found",
    410: "Gone",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
}

# Message ids on the real platform are 18-digit decimal strings that grow over time.
_message_ids = itertools.count(500_000_000_000_000_000 + int(time.time() * 1000) % 10**9 * 1000)


# --------------------------------------------------------------------------------------------
# Signatures and webhook events
# --------------------------------------------------------------------------------------------


def sign(channel_secret: str, body: bytes) -> str:
    """The `x-line-signature` LINE puts on a webhook: base64(HMAC-SHA256(secret, raw body))."""
    digest = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def new_webhook_event_id() -> str:
    """A ULID (26 Crockford base32 chars, time first) like LINE's `webhookEventId`."""
    value = (int(time.time() * 1000) & (2**48 - 1)) << 80 | (uuid.uuid4().int & (2**80 - 1))
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _new_message_id() -> str:
    return str(next(_message_ids))


def _new_token() -> str:
    return (
        base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes[:6]).decode().rstrip("=")
    )


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    # Nested dicts merge so a test can add one field to `message`; None removes a key so a test
    # can build the documented variants that lack a field (no replyToken, no quoteToken, ...).
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_event(
    event_type: str, user_id: str, *, reply_token: bool = True, **overrides: Any
) -> dict[str, Any]:
    """A webhook event with the common fields, from a user chat, in active mode."""
    event: dict[str, Any] = {
        "type": event_type,
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": user_id},
        "mode": "active",
        "webhookEventId": new_webhook_event_id(),
        "deliveryContext": {"isRedelivery": False},
    }
    if reply_token:
        event["replyToken"] = uuid.uuid4().hex
    return _merge(event, overrides)


def text_event(user_id: str, text: str, **overrides: Any) -> dict[str, Any]:
    """A documented text message event; `overrides` merge in (nested dicts too, None deletes)."""
    message = {
        "id": _new_message_id(),
        "type": "text",
        "quoteToken": _new_token(),
        "markAsReadToken": _new_token(),
        "text": text,
    }
    return _merge(base_event("message", user_id, message=message), overrides)


def image_event(user_id: str, message_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """An image message event whose content is held by LINE (fetch it from `contents`)."""
    message = {
        "id": message_id or _new_message_id(),
        "type": "image",
        "quoteToken": _new_token(),
        "markAsReadToken": _new_token(),
        "contentProvider": {"type": "line"},
    }
    return _merge(base_event("message", user_id, message=message), overrides)


def follow_event(user_id: str, *, is_unblocked: bool = False, **overrides: Any) -> dict[str, Any]:
    event = base_event("follow", user_id, follow={"isUnblocked": is_unblocked})
    return _merge(event, overrides)


def unfollow_event(user_id: str, **overrides: Any) -> dict[str, Any]:
    # Unfollow cannot be replied to, so LINE sends no replyToken.
    return base_event("unfollow", user_id, reply_token=False, **overrides)


def unsend_event(user_id: str, message_id: str, **overrides: Any) -> dict[str, Any]:
    event = base_event("unsend", user_id, reply_token=False, unsend={"messageId": message_id})
    return _merge(event, overrides)


def redelivered(event: dict[str, Any]) -> dict[str, Any]:
    """The same event as LINE resends it when redelivery is on: identical but for the flag."""
    return _merge(event, {"deliveryContext": {"isRedelivery": True}})


# --------------------------------------------------------------------------------------------
# Message validation (the subset of LINE's rules the bridge can trip over)
# --------------------------------------------------------------------------------------------


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _https_url_errors(message: dict[str, Any], field: str, prop: str) -> list[dict[str, str]]:
    value = message.get(field)
    if not isinstance(value, str) or not value:
        return [{"message": "must be specified", "property": f"{prop}.{field}"}]
    if not value.startswith("https://"):
        return [{"message": "must be a valid HTTPS URL", "property": f"{prop}.{field}"}]
    if len(value) > MAX_URL_LENGTH:
        return [
            {
                "message": f"Length must be between 0 and {MAX_URL_LENGTH}",
                "property": f"{prop}.{field}",
            }
        ]
    return []


def _required(message: dict[str, Any], fields: tuple[str, ...], prop: str) -> list[dict[str, str]]:
    return [
        {"message": "must be specified", "property": f"{prop}.{field}"}
        for field in fields
        if message.get(field) in (None, "")
    ]


def _quick_reply_errors(quick_reply: Any, prop: str) -> list[dict[str, str]]:
    """LINE's quick reply: 1 to 13 buttons; a message action's label 1 to 20 characters, its
    text 1 to 300."""
    items = quick_reply.get("items") if isinstance(quick_reply, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_QUICK_REPLY_ITEMS:
        size = f"Size must be between 1 and {MAX_QUICK_REPLY_ITEMS}"
        return [{"message": size, "property": f"{prop}.items"}]
    errors = []
    for i, item in enumerate(items):
        where = f"{prop}.items[{i}]"
        action = item.get("action") if isinstance(item, dict) else None
        if not isinstance(item, dict) or item.get("type") != "action":
            errors.append(
                {
                    "message": "Must be one of the following values: [action]",
                    "property": f"{where}.type",
                }
            )
        elif not isinstance(action, dict) or action.get("type") not in QUICK_REPLY_ACTIONS:
            errors.append({"message": "must be a valid action", "property": f"{where}.action"})
        elif action["type"] == "message":
            for field, limit in (("label", MAX_QUICK_REPLY_LABEL), ("text", MAX_QUICK_REPLY_TEXT)):
                value = action.get(field)
                if not isinstance(value, str) or not 1 <= _utf16_len(value) <= limit:
                    errors.append(
                        {
                            "message": f"Length must be between 1 and {limit}",
                            "property": f"{where}.action.{field}",
                        }
                    )
    return errors


def _message_errors(message: Any, prop: str) -> list[dict[str, str]]:
    if not isinstance(message, dict):
        return [{"message": "must be an object", "property": prop}]
    if "quickReply" in message:
        errors = _quick_reply_errors(message["quickReply"], f"{prop}.quickReply")
        if errors:
            return errors
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        # "file" lands here too: LINE has no file message for bots to send.
        allowed = ", ".join(MESSAGE_TYPES)
        return [
            {
                "message": f"Must be one of the following values: [{allowed}]",
                "property": f"{prop}.type",
            }
        ]
    if kind in ("text", "textV2"):
        text = message.get("text")
        if not isinstance(text, str):
            return [{"message": "must be specified", "property": f"{prop}.text"}]
        if not text:
            return [{"message": "May not be empty", "property": f"{prop}.text"}]
        if _utf16_len(text) > MAX_TEXT_UTF16:
            return [
                {
                    "message": f"Length must be between 0 and {MAX_TEXT_UTF16}",
                    "property": f"{prop}.text",
                }
            ]
        return []
    if kind in ("image", "video"):
        return _https_url_errors(message, "originalContentUrl", prop) + _https_url_errors(
            message, "previewImageUrl", prop
        )
    if kind == "audio":
        return _https_url_errors(message, "originalContentUrl", prop) + _required(
            message, ("duration",), prop
        )
    if kind == "location":
        return _required(message, ("title", "address", "latitude", "longitude"), prop)
    if kind == "sticker":
        return _required(message, ("packageId", "stickerId"), prop)
    return []


def _body_errors(body: Any, *, recipient_field: str) -> list[dict[str, str]]:
    if not isinstance(body, dict):
        return [{"message": "must be an object", "property": ""}]
    errors: list[dict[str, str]] = []
    recipient = body.get(recipient_field)
    if not isinstance(recipient, str) or not recipient:
        errors.append({"message": "must be specified", "property": recipient_field})
    messages = body.get("messages")
    if messages is None:
        errors.append({"message": "must be specified", "property": "messages"})
    elif not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        errors.append(
            {"message": f"Size must be between 1 and {MAX_MESSAGES}", "property": "messages"}
        )
    else:
        for i, message in enumerate(messages):
            errors.extend(_message_errors(message, f"messages[{i}]"))
    flag = body.get("notificationDisabled")
    if flag is not None and not isinstance(flag, bool):
        errors.append({"message": "must be a boolean", "property": "notificationDisabled"})
    return errors


def _validation_failed(errors: list[dict[str, str]]) -> dict[str, Any]:
    return {"message": f"The request body has {len(errors)} error(s)", "details": errors}


# --------------------------------------------------------------------------------------------
# The fake server
# --------------------------------------------------------------------------------------------


@dataclass
class Call:
    """One request the fake received. `status` is what it answered (0: connection dropped)."""

    path: str
    method: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    at: float = field(default_factory=time.time)  # time.time() when it arrived
    host: str = "api"  # or "data": which of LINE's two hosts it reached


@dataclass
class _Fault:
    prefix: str
    kind: str  # "fail", "slow" or "trickle"
    remaining: int
    status: int = 200
    delay: float = 0.0
    message: str | None = None
    # trickle: the body is sent `piece` bytes at a time, `every` seconds apart.
    piece: int = 0
    every: float = 0.0


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] | None = None
    delay: float = 0.0
    # False: no Content-Length; the body ends when the connection closes (HTTP/1.0).
    sized: bool = True
    # (bytes, seconds): after the headers, the body goes out that many bytes at a time, with that
    # pause before each piece after the first.
    trickle: tuple[int, float] | None = None


def _json_answer(status: int, payload: Any, **kwargs: Any) -> _Answer:
    return _Answer(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), **kwargs)


def _error(status: int, message: str | None = None) -> _Answer:
    text = message or _DEFAULT_MESSAGES.get(status) or HTTPStatus(status).phrase
    return _json_answer(status, {"message": text})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeLine
    # "api" (api.line.me) or "data" (api-data.line.me): each serves only its own endpoints.
    host: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (our own timeout tests) resets the socket; that is expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        call = Call(urlsplit(self.path).path, method, headers, body, host=self.server.host)
        with fake._lock:
            fake.calls.append(call)
        answer = fake._answer(call, raw)
        with fake._lock:
            call.status = answer.status
        # Never sleep holding the lock: other requests must go on while this one is slow.
        if answer.delay:
            time.sleep(answer.delay)
        if answer.status == 0:
            self.close_connection = True
            return
        self.send_response(answer.status)
        headers = {"x-line-request-id": str(uuid.uuid4()), **(answer.headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        if answer.content_type:
            self.send_header("Content-Type", answer.content_type)
        if answer.sized:
            self.send_header("Content-Length", str(len(answer.body)))
        else:
            self.close_connection = True
        self.end_headers()
        try:
            if answer.trickle is None:
                self.wfile.write(answer.body)
                return
            piece, every = answer.trickle
            for start in range(0, len(answer.body), piece):
                if start:
                    time.sleep(every)
                # Unbuffered: each piece leaves now. A client that gave up has closed the
                # connection, and a write after that fails, ending the answer.
                self.wfile.write(answer.body[start : start + piece])
        except OSError:
            self.close_connection = True


class FakeLine:
    """A LINE Messaging API on 127.0.0.1 that records what reached whom."""

    def __init__(
        self,
        *,
        channel_access_token: str = "test-line-token",
        channel_secret: str = "test-line-secret",
    ) -> None:
        self.channel_access_token = channel_access_token
        self.channel_secret = channel_secret
        self.base_url = ""  # api.line.me's stand-in
        self.data_base_url = ""  # api-data.line.me's: message content only
        self.webhook_url: str | None = None

        self.calls: list[Call] = []
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, tuple[bytes, str]] = {}
        # Each not-ready answer (a 202 on /content, "processing" on /content/transcoding) uses one.
        self.preparing: dict[str, int] = {}
        self.gone: set[str] = set()
        # Content served without a Content-Length, so a client learns its size only by reading.
        self.unsized: set[str] = set()
        self.transcoding_failed: set[str] = set()
        self.blocked_users: set[str] = set()
        # Reply token -> the user it answers; filled by text_event/user_says/post_events.
        self.reply_tokens: dict[str, str] = {}
        self.reply_token_ttl = 60.0
        # Retry key -> (request id of the accepted push, its sentMessages); LINE keeps them 24 h,
        # longer than any test.
        self.accepted_retry_keys: dict[str, tuple[str, list[dict[str, str]]]] = {}
        self.webhook_responses: list[tuple[int, bytes]] = []

        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._used_reply_tokens: set[str] = set()
        self._reply_token_issued: dict[str, float] = {}
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, port: int = 0, data_port: int = 0) -> FakeLine:
        """Serve the API on `port` and the data API on `data_port` (0: any free port)."""
        for host, host_port in (("api", port), ("data", data_port)):
            server = _Server(("127.0.0.1", host_port), _Handler)
            server.fake, server.host = self, host
            url = f"http://127.0.0.1:{server.server_address[1]}"
            if host == "api":
                self.base_url = url
            else:
                self.data_base_url = url
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> FakeLine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection ---------------------------------------------------------------------------

    def calls_to(self, path_prefix: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.path.startswith(path_prefix)]

    def texts_for(self, user_id: str) -> list[str]:
        with self._lock:
            messages = list(self.received.get(user_id, []))
        return [m["text"] for m in messages if m.get("type") in ("text", "textV2")]

    def wait_for(self, condition: Callable[[], Any], timeout: float = 5.0) -> bool:
        """Poll `condition` until truthy: the bridge delivers asynchronously."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    # -- faults -------------------------------------------------------------------------------

    def fail(
        self,
        path_prefix: str,
        *,
        status: int = 500,
        times: int = 1,
        delay: float = 0.0,
        message: str | None = None,
    ) -> None:
        """The next `times` requests to `path_prefix` answer `status` and deliver nothing.

        Status 0 drops the connection without an answer (a network error on our side).
        For 429 the default text is the rate-limit one; pass
        message="You have reached your monthly limit." for the quota one.
        """
        with self._lock:
            self._faults.append(_Fault(path_prefix, "fail", times, status, delay, message))

    def slow(self, path_prefix: str, seconds: float, times: int = 1) -> None:
        """The next `times` requests are carried out at once but answered `seconds` later.

        So a push that our client gives up on has still been delivered and its retry key
        accepted, as happens when LINE accepted a request whose answer we never read.
        """
        with self._lock:
            self._faults.append(_Fault(path_prefix, "slow", times, delay=seconds))

    def trickle(
        self, path_prefix: str, *, piece: int = 100, every: float = 0.1, times: int = 1
    ) -> None:
        """The next `times` answers to `path_prefix` send their status and headers (Content-Length
        the whole body's) at once, then the body `piece` bytes at a time, `every` seconds apart:
        a slow network, or with `every` long, one that stalls midway. Nothing else changes (a
        push is delivered before its answer starts); a client that gives up closes the
        connection and the rest is not sent.

        E.g. ``line.trickle("/v2/bot/message/325708/content", piece=100, every=0.5)``: a 1,000-byte
        image takes 4.5 s to arrive.
        """
        if piece < 1:
            raise ValueError("piece must be at least 1 byte")
        with self._lock:
            self._faults.append(_Fault(path_prefix, "trickle", times, piece=piece, every=every))

    def clear_faults(self) -> None:
        """Every fail(), slow() and trickle() still pending is forgotten: the platform has
        recovered."""
        with self._lock:
            self._faults.clear()

    def blocked(self, user_id: str) -> None:
        """The user blocked the bot: pushes still answer 200 but reach nobody; profile is 404."""
        with self._lock:
            self.blocked_users.add(user_id)

    def unblocked(self, user_id: str) -> None:
        with self._lock:
            self.blocked_users.discard(user_id)

    # -- webhooks -----------------------------------------------------------------------------

    def register_reply_token(self, token: str, user_id: str) -> None:
        with self._lock:
            if token not in self._used_reply_tokens:
                self.reply_tokens[token] = user_id
                self._reply_token_issued.setdefault(token, time.monotonic())

    def text_event(self, user_id: str, text: str, **overrides: Any) -> dict[str, Any]:
        """`text_event`, with its reply token remembered so that /reply accepts it once."""
        event = text_event(user_id, text, **overrides)
        self._register_events([event])
        return event

    def _register_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            token = event.get("replyToken") if isinstance(event, dict) else None
            source = event.get("source") if isinstance(event, dict) else None
            user_id = source.get("userId") if isinstance(source, dict) else None
            if isinstance(token, str) and isinstance(user_id, str):
                self.register_reply_token(token, user_id)

    def post_events(
        self,
        events: list[dict[str, Any]],
        *,
        destination: str = DEFAULT_DESTINATION,
        signature: str | None = None,
        raw_body: bytes | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """POST a webhook to `webhook_url` as LINE does; returns (status, body)."""
        if not self.webhook_url:
            raise RuntimeError("FakeLine.webhook_url is not set")
        self._register_events(events)
        if raw_body is None:
            # Non-ASCII stays raw UTF-8, as LINE sends it, so signature checks see real bytes.
            raw_body = json.dumps(
                {"destination": destination, "events": events},
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode("utf-8")
        if signature is None:
            signature = sign(self.channel_secret, raw_body)
        request = urllib.request.Request(
            self.webhook_url,
            data=raw_body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "LineBotWebhook/2.0",
                "x-line-signature": signature,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result = (response.status, response.read())
        except urllib.error.HTTPError as exc:
            result = (exc.code, exc.read())
        with self._lock:
            self.webhook_responses.append(result)
        return result

    def user_says(self, user_id: str, text: str, **extra: Any) -> dict[str, Any]:
        """Build a text event, post it, and return it (to post it again as a redelivery)."""
        event = self.text_event(user_id, text, **extra)
        self.post_events([event])
        return event

    # -- request handling ---------------------------------------------------------------------

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.prefix) and fault.remaining > 0:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _answer(self, call: Call, raw: bytes) -> _Answer:
        if call.headers.get("authorization") != f"Bearer {self.channel_access_token}":
            return _error(401)
        fault = self._take_fault(call.path)
        if fault is not None and fault.kind == "fail":
            answer = _error(fault.status, fault.message) if fault.status else _Answer(0)
            answer.delay = fault.delay
            return answer
        if len(raw) > MAX_BODY_BYTES:
            answer = _error(413)
        else:
            answer = self._route(call, raw)
        if fault is not None:
            answer.delay = fault.delay
            if fault.kind == "trickle":
                answer.trickle = (fault.piece, fault.every)
        return answer

    def _route(self, call: Call, raw: bytes) -> _Answer:
        method, path = call.method, call.path
        if call.host == "data":
            # api-data.line.me serves message content and nothing else.
            if method == "GET":
                if m := re.fullmatch(r"/v2/bot/message/([^/]+)/content", path):
                    return self._content(unquote(m.group(1)))
                if m := re.fullmatch(r"/v2/bot/message/([^/]+)/content/transcoding", path):
                    return self._transcoding(unquote(m.group(1)))
            return _error(404)
        if method == "POST" and path in (
            "/v2/bot/message/push",
            "/v2/bot/message/reply",
            "/v2/bot/chat/loading/start",
            "/v2/bot/chat/markAsRead",
        ):
            if not call.headers.get("content-type", "").startswith("application/json"):
                return _error(415)
            if raw and call.body is None:
                return _error(400, "The request body could not be parsed as JSON")
            if path == "/v2/bot/message/push":
                return self._push(call)
            if path == "/v2/bot/message/reply":
                return self._reply(call)
            if path == "/v2/bot/chat/loading/start":
                return self._loading(call)
            return self._mark_as_read(call)
        if method == "GET" and (m := re.fullmatch(r"/v2/bot/profile/([^/]+)", path)):
            return self._profile(unquote(m.group(1)))
        return _error(404)  # content included: it is on the data host

    def _sent_messages(self, count: int) -> list[dict[str, str]]:
        return [{"id": _new_message_id(), "quoteToken": _new_token()} for _ in range(count)]

    def _deliver_locked(self, user_id: str, messages: list[dict[str, Any]]) -> None:
        if user_id not in self.blocked_users:
            self.received.setdefault(user_id, []).extend(copy.deepcopy(messages))

    def _push(self, call: Call) -> _Answer:
        retry_key = call.headers.get("x-line-retry-key")
        if retry_key is not None and not _UUID_RE.match(retry_key):
            return _error(400, "The value of the X-Line-Retry-Key header is invalid")
        errors = _body_errors(call.body, recipient_field="to")
        if errors:
            return _json_answer(400, _validation_failed(errors))
        request_id = str(uuid.uuid4())
        with self._lock:
            # Check and record in one critical section so two concurrent retries deliver once.
            if retry_key is not None and retry_key in self.accepted_retry_keys:
                original_id, sent = self.accepted_retry_keys[retry_key]
                return _json_answer(
                    409,
                    {"message": "The retry key is already accepted", "sentMessages": sent},
                    headers={"x-line-accepted-request-id": original_id},
                )
            sent = self._sent_messages(len(call.body["messages"]))
            if retry_key is not None:
                self.accepted_retry_keys[retry_key] = (request_id, sent)
            self._deliver_locked(call.body["to"], call.body["messages"])
        return _json_answer(200, {"sentMessages": sent}, headers={"x-line-request-id": request_id})

    def _reply(self, call: Call) -> _Answer:
        if "x-line-retry-key" in call.headers:
            # LINE rejects the retry key on every API that does not support it, reply included.
            return _error(400, "X-Line-Retry-Key is not supported by this API")
        errors = _body_errors(call.body, recipient_field="replyToken")
        if errors:
            return _json_answer(400, _validation_failed(errors))
        token = call.body["replyToken"]
        with self._lock:
            user_id = self.reply_tokens.pop(token, None)
            issued = self._reply_token_issued.pop(token, None)
            self._used_reply_tokens.add(token)
            expired = issued is not None and time.monotonic() - issued > self.reply_token_ttl
            if user_id is None or expired:
                return _error(400, "Invalid reply token")
            sent = self._sent_messages(len(call.body["messages"]))
            self._deliver_locked(user_id, call.body["messages"])
        return _json_answer(200, {"sentMessages": sent})

    def _loading(self, call: Call) -> _Answer:
        body = call.body if isinstance(call.body, dict) else {}
        errors = []
        if not isinstance(body.get("chatId"), str) or not body.get("chatId"):
            errors.append({"message": "must be specified", "property": "chatId"})
        seconds = body.get("loadingSeconds", 20)
        if (
            not isinstance(seconds, int)
            or isinstance(seconds, bool)
            or not 5 <= seconds <= 60
            or seconds % 5
        ):
            errors.append(
                {"message": "must be a multiple of 5 from 5 to 60", "property": "loadingSeconds"}
            )
        if errors:
            return _json_answer(400, _validation_failed(errors))
        return _json_answer(202, {})

    def _mark_as_read(self, call: Call) -> _Answer:
        body = call.body if isinstance(call.body, dict) else {}
        if not isinstance(body.get("markAsReadToken"), str) or not body.get("markAsReadToken"):
            errors = [{"message": "must be specified", "property": "markAsReadToken"}]
            return _json_answer(400, _validation_failed(errors))
        return _json_answer(200, {})

    def _profile(self, user_id: str) -> _Answer:
        with self._lock:
            profile = self.profiles.get(user_id)
            if profile is None or user_id in self.blocked_users:
                return _error(404)
            return _json_answer(200, profile)

    def _content(self, message_id: str) -> _Answer:
        with self._lock:
            if message_id in self.gone:
                return _error(410)
            if self.preparing.get(message_id, 0) > 0:
                self.preparing[message_id] -= 1
                return _Answer(202, content_type=None)
            if message_id not in self.contents:
                return _error(404)
            data, content_type = self.contents[message_id]
            sized = message_id not in self.unsized
        return _Answer(200, data, content_type=content_type, sized=sized)

    def _transcoding(self, message_id: str) -> _Answer:
        with self._lock:
            if message_id in self.gone:
                return _error(410)
            if message_id in self.transcoding_failed:
                return _json_answer(200, {"status": "failed"})
            if self.preparing.get(message_id, 0) > 0:
                self.preparing[message_id] -= 1
                return _json_answer(200, {"status": "processing"})
            if message_id not in self.contents:
                return _error(404)
        return _json_answer(200, {"status": "succeeded"})
