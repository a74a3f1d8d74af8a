"""A fake LiveChat (accounts service + Web API 3.6 + webhooks) served over real HTTP.

One server answers both base URLs the bridge knows (LIVECHAT_ACCOUNTS_BASE_URL and
LIVECHAT_API_BASE_URL). It checks what the real service checks (credentials, token expiry,
organization_id, X-Region, required fields, chat state) and answers with the documented payloads,
so the bridge is tested against the contract and not against its own assumptions.

Names used by `calls_to`, `fail`, `slow` and `drop`: "token", "customer_token", a Customer Chat
method ("send_event"), or "agent/<method>" / "configuration/<method>". A bare agent or
configuration method name ("register_webhook") also matches when no Customer Chat method has that
name.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_VERSIONS = frozenset({"3.5", "3.6", "3.7"})
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_TEXT_BYTES = 16 * 1024
MAX_TOKENS_PER_CLIENT = 25
DEFAULT_REGION = "dal"  # the docs: a dal token needs no X-Region header
CDN_PREFIX = "https://cdn.livechat-files.com/"
SCOPE = (
    "customers:own chats--all:rw chats--access:rw chats.conversation--all:rw "
    "agents--all:rw groups--all:rw webhooks.configuration:rw"
)
CUSTOMER_METHODS = frozenset(
    {
        "start_chat",
        "resume_chat",
        "send_event",
        "deactivate_chat",
        "get_chat",
        "list_chats",
        "list_threads",
        "update_customer",
        "delete_event",
        "upload_file",
        "get_form",
        "list_group_statuses",
    }
)
CUSTOMER_EVENT_TYPES = frozenset({"message", "file", "filled_form", "rich_message", "custom"})


@dataclass
class Call:
    path: str
    name: str
    headers: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any] | None
    status: int = 0  # 0 while the request is still being answered, -1 if dropped unanswered
    at: float = dataclasses.field(default_factory=time.time)  # time.time() when it arrived


class _Answer(Exception):
    """Raised anywhere in a handler to answer with this status and JSON body."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _lc_error(status: int, error_type: str, message: str, data: dict | None = None) -> _Answer:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if data is not None:
        error["data"] = data
    return _Answer(status, {"error": error})


def _validation(message: str) -> _Answer:
    return _lc_error(400, "validation", message)


def _oauth_error(error: str, description: str, status: int = 400) -> _Answer:
    return _Answer(status, {"error": error, "error_description": description})


def _customer_token_error(status: int, exception: str, description: str) -> _Answer:
    return _Answer(status, {"oauth_exception": exception, "exception_description": description})


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lc_id() -> str:
    """Chat and thread ids look like LiveChat's: ten upper-case characters."""
    return uuid.uuid4().hex[:10].upper()


def _require(body: dict[str, Any], field: str, prefix: str = "") -> Any:
    value = body.get(field)
    if value is None or value == "":
        raise _validation(f"`{prefix}{field}` is required")
    return value


def _require_str(body: dict[str, Any], field: str, prefix: str = "") -> str:
    value = _require(body, field, prefix)
    if not isinstance(value, str):
        raise _validation(f"`{prefix}{field}` must be a string")
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _validation(f"`{field}` must be an object")
    return value


def _header_params(header_value: str) -> Message:
    """Parse a header with parameters (Content-Type, Content-Disposition) with the stdlib."""
    message = Message()
    message["x"] = header_value
    return message


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """Fields of a multipart/form-data body; files become {"filename", "content_type", "content"}.

    Hand-rolled because email.parser may rewrite line endings inside binary parts."""
    boundary = _header_params(content_type).get_param("boundary", header="x")
    if not isinstance(boundary, str) or not boundary:
        raise _validation("multipart body without a boundary")
    fields: dict[str, Any] = {}
    for part in raw.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        part = part.removeprefix(b"\r\n")
        head, _, content = part.partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        disposition = _header_params(headers.get("content-disposition", ""))
        name = disposition.get_param("name", header="x")
        if not isinstance(name, str):
            continue
        filename = disposition.get_param("filename", header="x")
        if isinstance(filename, str):
            fields[name] = {
                "filename": filename,
                "content_type": headers.get("content-type", "application/octet-stream"),
                "content": content,
            }
        else:
            fields[name] = content.decode("utf-8", "replace")
    return fields


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a handler sleeping in slow()/fail(delay)
    fake: FakeLiveChat

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is part of the tests, not a failure of the fake.
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            self.fake.errors.append(repr(exc))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeLiveChat:
    def __init__(
        self,
        *,
        client_id: str = "test-client-id",
        client_secret: str = "test-client-secret",
        organization_id: str = "test-org-id",
        refresh_token: str = "rt-0",
        region: str = "dal",
        webhook_secret: str = "test-webhook-secret",
        token_lifetime: int = 28800,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.organization_id = organization_id
        self.region = region
        self.webhook_secret = webhook_secret
        self.token_lifetime = token_lifetime
        self.account_id = "test-account-id"
        self.base_url = ""
        self.webhook_url: str | None = None

        # Knobs a test may set.
        self.authorization_codes: set[str] = set()
        # Other Developer Console apps of the account (client id -> secret): the accounts service
        # takes their credentials, but the bridge's tokens were issued to the bridge's app, so a
        # grant offering one as another app is `invalid_grant` (RFC 6749 5.2: "issued to another
        # client").
        self.other_apps: dict[str, str] = {}
        self.pats: dict[str, str] = {}  # account_id -> personal access token
        self.prechat_form: dict[str, Any] | None = None
        self.group_statuses: dict[int, str] = {0: "online", 1: "online"}
        # When set, the license "lives" in this region whatever the token prefix says, so every
        # Customer Chat call with another X-Region gets misdirected_request (tests the retry).
        self.license_region: str | None = None
        # When set, every new thread (start_chat/resume_chat) is queued with a copy of it.
        self.next_queue: dict[str, Any] | None = None
        # Real LiveChat also sends license webhooks for the customer's own actions; off by default
        # so that tests see only what they cause explicitly.
        self.echo_customer_events = False
        self.max_agent_tokens: int | None = MAX_TOKENS_PER_CLIENT
        self.api_agent_id = "agent@example.com"  # author of agent-API events

        # State.
        self.calls: list[Call] = []
        self.chats: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.valid_refresh_token = refresh_token
        self.uploads: dict[str, dict[str, Any]] = {}  # CDN url -> {"filename", ...}
        self.webhooks: dict[str, dict[str, Any]] = {}  # registered through the Configuration API
        self.agents: dict[str, dict[str, Any]] = {
            "agent@example.com": self._agent_record("agent@example.com", "Agent Smith", "owner")
        }
        self.webhooks_sent: list[tuple[dict[str, Any], int | None]] = []
        self._held: list[dict[str, Any]] | None = None
        self.errors: list[str] = []  # bugs of the fake itself; a test may assert it stays empty

        self._lock = threading.RLock()
        self._agent_tokens: dict[str, float] = {}  # token -> expiry (epoch s), oldest first
        self._customer_tokens: dict[str, tuple[str, float]] = {}  # token -> (entity_id, expiry)
        self._event_seq: dict[str, int] = {}  # thread_id -> last event number used
        self._faults: list[dict[str, Any]] = []
        self._slows: list[dict[str, Any]] = []
        self._drops: list[dict[str, Any]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int = 0) -> FakeLiveChat:
        server = _Server(("127.0.0.1", port), _Handler)
        server.fake = self
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-livechat",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeLiveChat:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ inspection

    def calls_to(self, name: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if _name_matches(name, call.name)]

    def chat_of(self, customer_id: str) -> dict[str, Any] | None:
        """The one chat of a customer, if it has one."""
        with self._lock:
            return self._chat_of(customer_id)

    def events(self, chat_id: str) -> list[dict[str, Any]]:
        """Every event of a chat, all threads, oldest first."""
        with self._lock:
            chat = self.chats[chat_id]
            return copy.deepcopy([e for thread in chat["threads"] for e in thread["events"]])

    # ------------------------------------------------------------------ faults

    def fail(
        self,
        name: str,
        *,
        status: int = 503,
        error_type: str | None = None,
        times: int = 1,
        delay: float = 0.0,
        retry_after: float | None = None,
    ) -> None:
        """The next `times` calls to `name` answer `status` after `delay` s, changing nothing.

        error_type defaults to too_many_requests for 429 and service_unavailable otherwise."""
        if error_type is None:
            error_type = "too_many_requests" if status == 429 else "service_unavailable"
        with self._lock:
            self._faults.append(
                {
                    "name": name,
                    "status": status,
                    "error_type": error_type,
                    "remaining": times,
                    "delay": delay,
                    "retry_after": retry_after,
                }
            )

    def drop(self, name: str, times: int = 1) -> None:
        """The next `times` calls to `name` are carried out, then the connection is closed with no
        answer (a proxy or a network cut): the client cannot know whether LiveChat acted."""
        with self._lock:
            self._drops.append({"name": name, "remaining": times})

    def slow(self, name: str, seconds: float, times: int = 1) -> None:
        """The next `times` calls to `name` are carried out, then answered `seconds` late.

        The state changes before the wait, as when LiveChat acted but the answer came too late
        for the client: the interesting case for retries and custom_id dedupe."""
        with self._lock:
            self._slows.append({"name": name, "seconds": seconds, "remaining": times})

    def expire_tokens(self) -> None:
        with self._lock:
            self._agent_tokens.clear()
            self._customer_tokens.clear()

    # ------------------------------------------------------------------ webhooks

    def make_envelope(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {
            "webhook_id": uuid.uuid4().hex,
            "secret_key": self.webhook_secret,
            "action": action,
            "organization_id": self.organization_id,
            "payload": payload,
            "additional_data": {},
        }

    def post_webhook(self, envelope: dict[str, Any], *, secret_key: str | None = None) -> int:
        if not self.webhook_url:
            raise RuntimeError("FakeLiveChat.webhook_url is not set")
        if secret_key is not None:
            envelope = {**envelope, "secret_key": secret_key}
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(envelope).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "LiveChat-Webhooks"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status = response.status
                response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.read()
            exc.close()
        with self._lock:
            self.webhooks_sent.append((envelope, status))
        return status

    @contextmanager
    def webhooks_held(self) -> Iterator[list[dict[str, Any]]]:
        """The webhooks made inside are not posted but collected, for the test to post in the
        order it chooses: LiveChat promises none, and retries a webhook up to a minute later."""
        held: list[dict[str, Any]] = []
        with self._lock:
            self._held = held
        try:
            yield held
        finally:
            with self._lock:
                self._held = None

    def _deliver(self, envelopes: list[dict[str, Any]]) -> None:
        for envelope in envelopes:
            with self._lock:
                if self._held is not None:
                    self._held.append(envelope)
                    continue
            if self.webhook_url:
                self.post_webhook(envelope)
            else:
                with self._lock:
                    self.webhooks_sent.append((envelope, None))

    def agent_says(
        self,
        chat_id: str,
        text: str,
        *,
        author_id: str = "agent@example.com",
        visibility: str = "all",
        event_id: str | None = None,
    ) -> dict[str, Any]:
        return self._agent_event(
            chat_id,
            {"type": "message", "text": text, "visibility": visibility, "author_id": author_id},
            event_id=event_id,
        )

    def agent_sends_rich_message(
        self, chat_id: str, elements: list[dict[str, Any]], *, template_id: str = "cards"
    ) -> dict[str, Any]:
        """A rich message (cards, quick replies), as an agent or a bot sends one."""
        return self._agent_event(
            chat_id,
            {
                "type": "rich_message",
                "template_id": template_id,
                "elements": elements,
                "visibility": "all",
                "author_id": "agent@example.com",
            },
        )

    def agent_sends_file(
        self,
        chat_id: str,
        *,
        url: str,
        name: str,
        content_type: str,
        size: int,
        thumbnail_url: str | None = None,
        author_id: str = "agent@example.com",
    ) -> dict[str, Any]:
        """An agent attaches a file in the agent app: a `file` event, posted as incoming_event."""
        fields: dict[str, Any] = {
            "type": "file",
            "url": url,
            "name": name,
            "content_type": content_type,
            "size": size,
            "visibility": "all",
            "author_id": author_id,
        }
        if thumbnail_url:
            fields["thumbnail_url"] = thumbnail_url
        return self._agent_event(chat_id, fields)

    def _agent_event(
        self, chat_id: str, fields: dict[str, Any], *, event_id: str | None = None
    ) -> dict[str, Any]:
        """Append an agent's event to the chat's active thread and post it as incoming_event."""
        with self._lock:
            chat = self._known_chat(chat_id)
            thread = chat["threads"][-1]
            if not thread["active"]:
                raise RuntimeError(f"chat {chat_id} is inactive: an agent cannot write to it")
            event = {
                "id": event_id or self._next_event_id(thread["id"]),
                **fields,
                "created_at": _now_iso(),
            }
            thread["events"].append(event)
            envelope = self.make_envelope(
                "incoming_event",
                {"chat_id": chat_id, "thread_id": thread["id"], "event": copy.deepcopy(event)},
            )
        self._deliver([envelope])
        return envelope

    def clear_faults(self) -> None:
        """Every fail(), slow() and drop() still pending is forgotten: the service has recovered."""
        with self._lock:
            self._faults.clear()
            self._slows.clear()
            self._drops.clear()

    def agent_ends_chat(
        self, chat_id: str, *, user_id: str | None = "agent@example.com"
    ) -> dict[str, Any]:
        """user_id=None: the router closed the chat, and the payload has no user_id."""
        with self._lock:
            envelope = self._deactivate(self._known_chat(chat_id), user_id)
        self._deliver([envelope])
        return envelope

    def agent_sees(
        self, chat_id: str, *, up_to: str | None = None, agent_id: str = "agent@example.com"
    ) -> dict[str, Any]:
        """The agent app marks the chat's events seen up to `up_to` (by default, as when an agent
        opens the chat: the `created_at` of its newest event), posted as events_marked_as_seen."""
        with self._lock:
            chat = self._known_chat(chat_id)
            if up_to is None:
                events = [e for t in chat["threads"] for e in t["events"]]
                up_to = max(e["created_at"] for e in events)
            envelope = self.make_envelope(
                "events_marked_as_seen",
                {"user_id": agent_id, "chat_id": chat_id, "seen_up_to": up_to},
            )
        self._deliver([envelope])
        return envelope

    def agent_joins(
        self, chat_id: str, *, agent_id: str = "agent@example.com", name: str = "Agent Smith"
    ) -> dict[str, Any]:
        with self._lock:
            chat = self._known_chat(chat_id)
            if agent_id not in chat["agent_ids"]:
                chat["agent_ids"].append(agent_id)
            self.agents.setdefault(agent_id, self._agent_record(agent_id, name, "normal"))
            envelope = self.make_envelope(
                "user_added_to_chat",
                {
                    "chat_id": chat_id,
                    "thread_id": chat["threads"][-1]["id"],
                    "user": {"id": agent_id, "type": "agent", "name": name},
                    "reason": "manual",
                },
            )
        self._deliver([envelope])
        return envelope

    def transfer(
        self,
        chat_id: str,
        *,
        group_ids: tuple[int, ...] | list[int] = (1,),
        agent_ids: tuple[str, ...] | list[str] = (),
        queue: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            envelope = self._transfer(self._known_chat(chat_id), list(group_ids), list(agent_ids))
            if queue is not None:
                self._known_chat(chat_id)["threads"][-1]["queue"] = dict(queue)
                envelope["payload"]["queue"] = dict(queue)
        self._deliver([envelope])
        return envelope

    # ------------------------------------------------------------------ HTTP plumbing

    def _serve(self, handler: _Handler) -> None:
        parsed = urllib.parse.urlsplit(handler.path)
        path = parsed.path
        query = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        headers = {k.lower(): v for k, v in handler.headers.items()}
        raw = _read_body(handler)
        api, name, version = _route(handler.command, path)
        body, body_error = self._parse_body(api, name, headers, raw)
        call = Call(path=path, name=name, headers=headers, query=query, body=body)
        with self._lock:
            self.calls.append(call)

        envelopes: list[dict[str, Any]] = []
        delay = 0.0
        dropped = False
        try:
            fault = self._take(self._faults, name)
            if fault is not None:
                time.sleep(fault["delay"])
                answer = _lc_error(
                    fault["status"], fault["error_type"], f"{fault['error_type']} (injected)"
                )
                if fault["retry_after"] is not None:
                    answer.headers["Retry-After"] = f"{fault['retry_after']:g}"
                raise answer
            if body_error is not None:
                raise body_error
            status, result = self._dispatch(api, name, version, headers, query, body, envelopes)
            answer = _Answer(status, result)
            slow = self._take(self._slows, name)
            delay = slow["seconds"] if slow else 0.0
            dropped = self._take(self._drops, name) is not None
        except _Answer as exc:
            answer = exc
        except Exception as exc:  # a bug of the fake: answer like LiveChat would, and keep it
            self.errors.append(f"{name}: {exc!r}")
            answer = _lc_error(500, "internal", f"fake LiveChat error: {exc!r}")

        # Webhooks and waits happen outside the lock: a receiver may call us back meanwhile.
        try:
            self._deliver(envelopes)
        except Exception as exc:
            self.errors.append(f"webhook delivery after {name}: {exc!r}")
        if delay:
            time.sleep(delay)
        if dropped:
            call.status = -1
            handler.close_connection = True  # closed after this request, nothing written
            return
        call.status = answer.status
        _send(handler, answer)

    def _parse_body(
        self, api: str, name: str, headers: dict[str, str], raw: bytes
    ) -> tuple[dict[str, Any] | None, _Answer | None]:
        content_type = headers.get("content-type", "")
        if api == "customer" and name == "upload_file":
            if not content_type.startswith("multipart/form-data"):
                return None, _validation("upload_file expects multipart/form-data")
            try:
                return _parse_multipart(content_type, raw), None
            except _Answer as exc:
                return None, exc
        if api == "accounts" and name == "token" and "json" not in content_type:
            form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
            return {k: v[0] for k, v in form.items()}, None
        if not raw.strip():
            return {}, None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict):
            return body, None
        if name == "token":
            return None, _oauth_error("invalid_request", "Invalid JSON body")
        if api == "accounts":
            return None, _customer_token_error(400, "invalid_request", "Invalid JSON body")
        return None, _validation("The request body must be a JSON object")

    def _take(self, queue: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
        with self._lock:
            # An exact name wins over "*", so fail("*") and fail("send_event") compose.
            for wildcard in (False, True):
                for entry in queue:
                    if entry["remaining"] <= 0 or (entry["name"] == "*") != wildcard:
                        continue
                    if _name_matches(entry["name"], name):
                        entry["remaining"] -= 1
                        return dict(entry)
            return None

    def _dispatch(
        self,
        api: str,
        name: str,
        version: str,
        headers: dict[str, str],
        query: dict[str, str],
        body: dict[str, Any] | None,
        envelopes: list[dict[str, Any]],
    ) -> tuple[int, Any]:
        body = body or {}
        if api == "unknown":
            raise _lc_error(404, "not_found", f"No such endpoint: {name}")
        if api == "accounts":
            handler = self._token if name == "token" else self._customer_token
            with self._lock:
                return 200, copy.deepcopy(handler(headers, body))
        if version not in API_VERSIONS:
            raise _lc_error(400, "unsupported_version", f"API version {version} is not supported")
        method = name.rpartition("/")[2]
        if api == "customer":
            if query.get("organization_id") != self.organization_id:
                raise _validation("`organization_id` is required and must be your organization")
            customer_id, token = self._customer_auth(headers)
            self._check_region(headers, token)
            handler = getattr(self, f"_c_{method}", None)
            if method not in CUSTOMER_METHODS or handler is None:
                raise _validation(f"Unknown method `{method}`")
            with self._lock:
                result = handler(customer_id, body, envelopes)
                return 200, copy.deepcopy(result)
        self._agent_auth(headers)
        handler = getattr(self, f"_{'a' if api == 'agent' else 'cfg'}_{method}", None)
        if handler is None:
            raise _validation(f"Unknown method `{method}`")
        with self._lock:
            return 200, copy.deepcopy(handler(body, envelopes))

    # ------------------------------------------------------------------ auth

    def _bearer(self, headers: dict[str, str]) -> str | None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def _issue_agent_token(self) -> str:
        token = f"{self.region}:{uuid.uuid4().hex}"
        self._agent_tokens[token] = time.time() + self.token_lifetime
        # The accounts service keeps at most 25 tokens per client: the oldest one stops working,
        # which is what a bridge minting a token per request would run into.
        while self.max_agent_tokens and len(self._agent_tokens) > self.max_agent_tokens:
            del self._agent_tokens[next(iter(self._agent_tokens))]
        return token

    def _agent_token_valid(self, token: str | None) -> bool:
        with self._lock:
            expiry = self._agent_tokens.get(token or "")
            return expiry is not None and expiry > time.time()

    def _customer_auth(self, headers: dict[str, str]) -> tuple[str, str]:
        token = self._bearer(headers)
        with self._lock:
            entry = self._customer_tokens.get(token or "")
        if token is None or entry is None or entry[1] <= time.time():
            raise _lc_error(401, "authentication", "Invalid access token")
        return entry[0], token

    def _check_region(self, headers: dict[str, str], token: str) -> None:
        prefix, sep, _ = token.partition(":")
        expected = self.license_region or (prefix if sep else DEFAULT_REGION)
        given = headers.get("x-region", "").strip() or DEFAULT_REGION
        if given != expected:
            raise _lc_error(
                421,
                "misdirected_request",
                f"Wrong region: the license is served from `{expected}`",
                {"region": expected},
            )

    def _agent_auth(self, headers: dict[str, str]) -> None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._agent_token_valid(value.strip()):
            return
        if scheme.lower() == "basic":
            try:
                account_id, _, pat = base64.b64decode(value.strip()).decode().partition(":")
            except ValueError:
                account_id, pat = "", ""
            if pat and self.pats.get(account_id) == pat:
                return
        raise _lc_error(401, "authentication", "Invalid access token")

    # ------------------------------------------------------------------ accounts service

    def _token_answer(self) -> dict[str, Any]:
        self.valid_refresh_token = f"{self.region}:{uuid.uuid4().hex}"
        return {
            "access_token": self._issue_agent_token(),
            "refresh_token": self.valid_refresh_token,
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
            "scope": SCOPE,
            "account_id": self.account_id,
            "organization_id": self.organization_id,
        }

    def _token(self, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        grant_type = body.get("grant_type")
        if grant_type not in ("refresh_token", "authorization_code"):
            raise _oauth_error("unsupported_grant_type", f"grant_type {grant_type!r} is invalid")
        for field in ("client_id", "client_secret"):
            if not body.get(field):
                raise _oauth_error("invalid_request", f"{field} is required")
        apps = {**self.other_apps, self.client_id: self.client_secret}
        if body["client_id"] not in apps:
            raise _oauth_error("invalid_request", "client_id is invalid")
        if body["client_secret"] != apps[body["client_id"]]:
            raise _oauth_error("invalid_request", "client_secret is invalid")
        if grant_type == "refresh_token":
            if not body.get("refresh_token"):
                raise _oauth_error("invalid_request", "refresh_token is required")
            if body["refresh_token"] != self.valid_refresh_token:
                raise _oauth_error("invalid_grant", "refresh token is invalid or was already used")
            if body["client_id"] != self.client_id:
                raise _oauth_error("invalid_grant", "refresh token was issued to another client")
            return self._token_answer()
        for field in ("code", "redirect_uri"):
            if not body.get(field):
                raise _oauth_error("invalid_request", f"{field} is required")
        if body["code"] not in self.authorization_codes or body["client_id"] != self.client_id:
            raise _oauth_error("invalid_grant", "authorization code is invalid or expired")
        self.authorization_codes.discard(body["code"])  # codes are single-use
        return self._token_answer()

    def _customer_token(self, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if not self._agent_token_valid(self._bearer(headers)):
            raise _customer_token_error(401, "invalid_token", "Invalid or expired access token")
        if body.get("grant_type") != "agent_token":
            raise _customer_token_error(
                400, "unsupported_grant_type", "grant_type must be agent_token"
            )
        if body.get("response_type") != "token":
            raise _customer_token_error(
                400, "unsupported_response_type", "response_type must be token"
            )
        if not body.get("client_id"):
            raise _customer_token_error(400, "invalid_request", "client_id is required")
        if body["client_id"] != self.client_id:
            raise _customer_token_error(400, "invalid_client", "client_id is invalid")
        entity_id = body.get("entity_id")
        if entity_id is not None:
            if entity_id not in self.customers:
                raise _customer_token_error(400, "invalid_request", "entity_id is invalid")
        else:
            entity_id = str(uuid.uuid4())
            self.customers[entity_id] = {
                "id": entity_id,
                "name": None,
                "email": None,
                "avatar": None,
                "session_fields": [],
            }
        token = f"{self.region}:{uuid.uuid4().hex}"
        self._customer_tokens[token] = (entity_id, time.time() + self.token_lifetime)
        return {
            "access_token": token,
            "entity_id": entity_id,
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
            "organization_id": self.organization_id,
            "client_id": self.client_id,
        }

    # ------------------------------------------------------------------ chat state helpers

    def _chat_of(self, customer_id: str) -> dict[str, Any] | None:
        for chat in self.chats.values():
            if chat["customer_id"] == customer_id:
                return chat
        return None

    def _known_chat(self, chat_id: str) -> dict[str, Any]:
        """For the test-side helpers: a wrong chat id is a bug of the test."""
        chat = self.chats.get(chat_id)
        if chat is None:
            raise KeyError(f"FakeLiveChat has no chat {chat_id!r}")
        return chat

    def _own_chat(self, customer_id: str, chat_id: Any, field: str = "chat_id") -> dict[str, Any]:
        if not isinstance(chat_id, str) or not chat_id:
            raise _validation(f"`{field}` is required")
        chat = self.chats.get(chat_id)
        if chat is None or chat["customer_id"] != customer_id:
            raise _validation(f"Chat `{chat_id}` not found")
        return chat

    def _next_event_id(self, thread_id: str) -> str:
        self._event_seq[thread_id] = self._event_seq.get(thread_id, 0) + 1
        return f"{thread_id}_{self._event_seq[thread_id]}"

    def _check_group_ids(self, access: dict[str, Any], default: list[int]) -> list[int]:
        group_ids = access.get("group_ids", default)
        if not isinstance(group_ids, list) or not all(
            isinstance(g, int) and not isinstance(g, bool) for g in group_ids
        ):
            raise _validation("`chat.access.group_ids` must be a list of integers")
        for group_id in group_ids:
            if group_id not in self.group_statuses:
                raise _lc_error(400, "group_not_found", f"Group {group_id} not found")
        return group_ids or [0]

    def _check_event(self, event: Any, field: str) -> dict[str, Any]:
        """Validate a customer event before anything is stored, so a bad call changes nothing."""
        if not isinstance(event, dict):
            raise _validation(f"`{field}` must be an object")
        event_type = _require_str(event, "type", f"{field}.")
        if event_type not in CUSTOMER_EVENT_TYPES:
            raise _validation(f"`{field}.type` {event_type!r} is not supported")
        if event_type == "message":
            text = _require_str(event, "text", f"{field}.")
            if len(text.encode()) > MAX_TEXT_BYTES:
                raise _validation(f"`{field}.text` is longer than 16 KB")
        elif event_type == "file":
            url = _require_str(event, "url", f"{field}.")
            if not url.startswith(CDN_PREFIX):
                raise _validation(f"`{field}.url` must be a URL returned by upload_file")
        elif event_type == "filled_form":
            _require(event, "form_id", f"{field}.")
            if not isinstance(_require(event, "fields", f"{field}."), list):
                raise _validation(f"`{field}.fields` must be a list")
        recipients = event.get("recipients", "all")
        if recipients not in ("all", "agents"):
            raise _validation(f"`{field}.recipients` must be `all` or `agents`")
        custom_id = event.get("custom_id")
        if custom_id is not None and not isinstance(custom_id, str):
            raise _validation(f"`{field}.custom_id` must be a string")
        return event

    def _store_customer_event(
        self, event: dict[str, Any], thread: dict[str, Any], customer_id: str
    ) -> dict[str, Any]:
        stored = copy.deepcopy(event)
        stored.pop("recipients", None)
        stored["id"] = self._next_event_id(thread["id"])
        stored["author_id"] = customer_id
        stored["created_at"] = _now_iso()
        stored["visibility"] = event.get("recipients", "all")
        if stored["type"] == "file":
            # LiveChat fills in what it knows of the uploaded file.
            upload = self.uploads.get(stored["url"], {})
            for key in ("name", "content_type", "size"):
                if key in upload:
                    stored.setdefault(key, upload[key])
        thread["events"].append(stored)
        return stored

    def _new_thread(self, active: bool) -> dict[str, Any]:
        thread: dict[str, Any] = {
            "id": _lc_id(),
            "active": active,
            "events": [],
            "created_at": _now_iso(),
        }
        if self.next_queue is not None and active:
            thread["queue"] = {"queued_at": _now_iso(), **self.next_queue}
        return thread

    def _thread_view(self, chat: dict[str, Any], thread: dict[str, Any]) -> dict[str, Any]:
        view = {
            "id": thread["id"],
            "active": thread["active"],
            "user_ids": [chat["customer_id"], *chat["agent_ids"]],
            "events": thread["events"],
            "properties": {},
            "access": {"group_ids": chat["group_ids"]},
            "created_at": thread["created_at"],
        }
        if thread.get("queue"):
            view["queue"] = thread["queue"]
        return view

    def _users(self, chat: dict[str, Any]) -> list[dict[str, Any]]:
        customer = self.customers.get(chat["customer_id"], {"id": chat["customer_id"]})
        users: list[dict[str, Any]] = [
            {
                "id": customer["id"],
                "type": "customer",
                "name": customer.get("name") or "",
                "email": customer.get("email") or "",
                "avatar": customer.get("avatar") or "",
                "session_fields": customer.get("session_fields", []),
                "present": True,
            }
        ]
        for agent_id in chat["agent_ids"]:
            agent = self.agents.get(agent_id, {"name": ""})
            users.append(
                {
                    "id": agent_id,
                    "type": "agent",
                    "name": agent["name"],
                    "avatar": "",
                    "present": True,
                    "visibility": "all",
                }
            )
        return users

    def _deactivate(self, chat: dict[str, Any], user_id: str | None) -> dict[str, Any]:
        thread = chat["threads"][-1]
        if not thread["active"]:
            raise _lc_error(400, "chat_inactive", "Chat is inactive")
        thread["active"] = False
        thread.pop("queue", None)
        payload: dict[str, Any] = {"chat_id": chat["id"], "thread_id": thread["id"]}
        if user_id is not None:
            payload["user_id"] = user_id
        return self.make_envelope("chat_deactivated", payload)

    def _transfer(
        self, chat: dict[str, Any], group_ids: list[int], agent_ids: list[str]
    ) -> dict[str, Any]:
        if group_ids:
            chat["group_ids"] = list(group_ids)
        payload: dict[str, Any] = {
            "chat_id": chat["id"],
            "reason": "manual",
            "transferred_to": {"group_ids": list(group_ids), "agent_ids": list(agent_ids)},
        }
        if chat["threads"][-1]["active"]:  # LiveChat: `thread_id` "present if the chat is active"
            payload["thread_id"] = chat["threads"][-1]["id"]
        return self.make_envelope("chat_transferred", payload)

    def _echo(self, envelopes: list[dict[str, Any]], action: str, payload: dict[str, Any]) -> None:
        if self.echo_customer_events:
            envelopes.append(self.make_envelope(action, copy.deepcopy(payload)))

    def _echo_events(
        self, envelopes: list[dict[str, Any]], chat: dict[str, Any], thread: dict[str, Any]
    ) -> None:
        self._echo(envelopes, "incoming_chat", self._chat_started(chat, thread))

    def _chat_started(self, chat: dict[str, Any], thread: dict[str, Any]) -> dict[str, Any]:
        """incoming_chat's payload: the chat, its users and the thread that started."""
        return {
            "chat": {
                "id": chat["id"],
                "users": self._users(chat),
                "thread": self._thread_view(chat, thread),
            }
        }

    def chat_started_envelope(
        self, chat_id: str, *, queue: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The incoming_chat webhook of the chat's last thread as it stands now (its users, and
        `queue` when given), not posted: for a test to deliver it late."""
        with self._lock:
            chat = self._known_chat(chat_id)
            payload = copy.deepcopy(self._chat_started(chat, chat["threads"][-1]))
        if queue is not None:
            payload["chat"]["thread"]["queue"] = dict(queue)
        return self.make_envelope("incoming_chat", payload)

    # ------------------------------------------------------------------ Customer Chat API

    def _c_start_chat(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        existing = self._chat_of(customer_id)
        if existing is not None:
            if existing["threads"][-1]["active"]:
                raise _validation("Chat is already active")
            # A customer has one chat per license: an ended one is resumed, not started anew.
            raise _validation(f"Customer already has chat `{existing['id']}`: use resume_chat")
        chat_in = _object(body.get("chat"), "chat")
        group_ids = self._check_group_ids(_object(chat_in.get("access"), "chat.access"), [0])
        properties = _object(chat_in.get("properties"), "chat.properties")
        events = self._thread_events(chat_in)
        active = body.get("active", True) is not False
        self._check_groups_online(group_ids, body, active)
        thread = self._new_thread(active)
        chat = {
            "id": _lc_id(),
            "customer_id": customer_id,
            "threads": [thread],
            "properties": copy.deepcopy(properties),
            "group_ids": group_ids,
            "agent_ids": [],
            "continuous": bool(body.get("continuous", False)),
        }
        self.chats[chat["id"]] = chat
        event_ids = [self._store_customer_event(e, thread, customer_id)["id"] for e in events]
        self._echo_events(envelopes, chat, thread)
        return {"chat_id": chat["id"], "thread_id": thread["id"], "event_ids": event_ids}

    def _thread_events(self, chat_in: dict[str, Any]) -> list:
        events = _object(chat_in.get("thread"), "chat.thread").get("events") or []
        if not isinstance(events, list):
            raise _validation("`chat.thread.events` must be a list")
        for i, event in enumerate(events):
            self._check_event(event, f"chat.thread.events[{i}]")
        return events

    def _check_groups_online(
        self, group_ids: list[int], body: dict[str, Any], active: bool
    ) -> None:
        # Only a continuous (messaging-mode) chat may start while nobody can take it.
        if not active or body.get("continuous"):
            return
        if all(self.group_statuses.get(g) == "offline" for g in group_ids):
            raise _lc_error(400, "group_offline", "Group is offline")

    def _c_resume_chat(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        chat_in = _object(body.get("chat"), "chat")
        chat = self._own_chat(customer_id, chat_in.get("id"), "chat.id")
        if chat["threads"][-1]["active"]:
            raise _validation("Chat is already active")
        access = _object(chat_in.get("access"), "chat.access")
        group_ids = self._check_group_ids(access, chat["group_ids"])
        events = self._thread_events(chat_in)
        active = body.get("active", True) is not False
        self._check_groups_online(group_ids, body, active)
        chat["group_ids"] = group_ids
        if "continuous" in body:
            chat["continuous"] = bool(body["continuous"])
        thread = self._new_thread(active)
        chat["threads"].append(thread)
        event_ids = [self._store_customer_event(e, thread, customer_id)["id"] for e in events]
        self._echo_events(envelopes, chat, thread)
        return {"thread_id": thread["id"], "event_ids": event_ids}

    def _c_send_event(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        chat_id = _require_str(body, "chat_id")
        event = self._check_event(_require(body, "event"), "event")
        chat = self._own_chat(customer_id, chat_id)
        thread = chat["threads"][-1]
        if not thread["active"] and body.get("attach_to_last_thread") is not True:
            raise _lc_error(400, "chat_inactive", "Chat is inactive")
        stored = self._store_customer_event(event, thread, customer_id)
        self._echo(
            envelopes,
            "incoming_event",
            {"chat_id": chat_id, "thread_id": thread["id"], "event": stored},
        )
        return {"event_id": stored["id"]}

    def _c_deactivate_chat(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        chat = self._own_chat(customer_id, _require_str(body, "id"), "id")
        envelope = self._deactivate(chat, customer_id)
        if self.echo_customer_events:
            envelopes.append(envelope)
        return {}

    def _c_get_chat(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        chat = self._own_chat(customer_id, _require_str(body, "chat_id"))
        thread_id = body.get("thread_id")
        if thread_id:
            matches = [t for t in chat["threads"] if t["id"] == thread_id]
            if not matches:
                raise _validation(f"Thread `{thread_id}` not found")
            thread = matches[0]
        else:
            thread = chat["threads"][-1]
        return {
            "id": chat["id"],
            "thread": self._thread_view(chat, thread),
            "users": self._users(chat),
            "properties": chat["properties"],
            "access": {"group_ids": chat["group_ids"]},
        }

    def _c_list_chats(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 1 <= limit <= 25:
            raise _validation("`limit` must be between 1 and 25")
        chat = self._chat_of(customer_id)
        summaries = []
        if chat is not None:
            last = chat["threads"][-1]
            summaries.append(
                {
                    # The Customer Chat API's summary (the Agent Chat API's has
                    # `last_thread_summary` instead).
                    "id": chat["id"],
                    "last_thread_id": last["id"],
                    "active": last["active"],
                    "users": self._users(chat),
                    "properties": chat["properties"],
                    "access": {"group_ids": chat["group_ids"]},
                }
            )
        return {"chats_summary": summaries[:limit], "total_chats": len(summaries)}

    def _c_list_threads(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        chat = self._own_chat(customer_id, _require_str(body, "chat_id"))
        limit = body.get("limit", 3)
        if not isinstance(limit, int) or not 1 <= limit <= 100:
            raise _validation("`limit` must be between 1 and 100")
        threads = list(chat["threads"])
        if body.get("sort_order", "desc") == "desc":
            threads.reverse()
        return {
            "threads": [self._thread_view(chat, t) for t in threads[:limit]],
            "found_threads": len(threads),
        }

    def _c_update_customer(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        customer = self.customers[customer_id]
        for field in ("name", "email", "avatar"):
            if field in body and not isinstance(body[field], str):
                raise _validation(f"`{field}` must be a string")
        if "avatar" in body and not body["avatar"].startswith(("http://", "https://")):
            raise _validation("`avatar` must be a URL")
        session_fields = body.get("session_fields")
        if session_fields is not None:
            if not isinstance(session_fields, list) or not all(
                isinstance(f, dict) and len(f) == 1 for f in session_fields
            ):
                raise _validation("`session_fields` must be a list of one-key objects")
            if len(session_fields) > 100:
                raise _validation("`session_fields` may hold at most 100 keys")
        if not any(f in body for f in ("name", "email", "avatar", "session_fields")):
            raise _validation("At least one of `name`, `email`, `avatar`, `session_fields`")
        for field in ("name", "email", "avatar", "session_fields"):
            if field in body:
                customer[field] = copy.deepcopy(body[field])
        return {}

    def _c_delete_event(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        chat_id = _require_str(body, "chat_id")
        thread_id = _require_str(body, "thread_id")
        event_id = _require_str(body, "event_id")
        chat = self._own_chat(customer_id, chat_id)
        for thread in chat["threads"]:
            if thread["id"] != thread_id:
                continue
            for event in thread["events"]:
                if event["id"] == event_id:
                    if event.get("author_id") != customer_id:
                        raise _lc_error(403, "authorization", "Cannot delete another's event")
                    thread["events"].remove(event)
                    return {}
            raise _validation(f"Event `{event_id}` not found")
        raise _validation(f"Thread `{thread_id}` not found")

    def _c_upload_file(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        upload = body.get("file")
        if not isinstance(upload, dict):
            raise _validation("`file` is required")
        size = len(upload["content"])
        if size > MAX_UPLOAD_BYTES:
            raise _lc_error(413, "entity_too_large", "Upload limit exceeded (10MB).")
        filename = upload["filename"] or "file"
        url = (
            f"{CDN_PREFIX}api/file/lc/att/{uuid.uuid4().hex}/"
            f"{urllib.parse.quote(filename, safe='')}"
        )
        self.uploads[url] = {
            "name": filename,
            "content_type": upload["content_type"],
            "size": size,
            "content": upload["content"],
            "customer_id": customer_id,
        }
        return {"url": url}

    def _c_get_form(self, customer_id: str, body: dict[str, Any], envelopes: list) -> dict:
        group_id = _require(body, "group_id")
        form_type = _require_str(body, "type")
        if form_type not in ("prechat", "postchat", "ask_for_email"):
            raise _validation("`type` must be prechat, postchat or ask_for_email")
        if group_id not in self.group_statuses:
            raise _lc_error(400, "group_not_found", f"Group {group_id} not found")
        if self.prechat_form is None or form_type != "prechat":
            return {"enabled": False}
        return {"enabled": True, "form": self.prechat_form}

    def _c_list_group_statuses(
        self, customer_id: str, body: dict[str, Any], envelopes: list
    ) -> dict:
        if body.get("all") is True:
            group_ids = list(self.group_statuses)
        elif isinstance(body.get("group_ids"), list):
            group_ids = body["group_ids"]
        else:
            raise _validation("`all` or `group_ids` is required")
        return {"groups_status": {str(g): self.group_statuses.get(g, "offline") for g in group_ids}}

    # ------------------------------------------------------------------ Agent Chat API

    def _a_send_event(self, body: dict[str, Any], envelopes: list) -> dict:
        chat_id = _require_str(body, "chat_id")
        event = _require(body, "event")
        if not isinstance(event, dict):
            raise _validation("`event` must be an object")
        _require_str(event, "type", "event.")
        if event["type"] == "message":
            _require_str(event, "text", "event.")
        visibility = event.get("visibility", "all")
        if visibility not in ("all", "agents"):
            raise _validation("`event.visibility` must be `all` or `agents`")
        chat = self.chats.get(chat_id)
        if chat is None:
            raise _lc_error(400, "not_found", f"Chat `{chat_id}` not found")
        thread = chat["threads"][-1]
        if not thread["active"] and body.get("attach_to_last_thread") is not True:
            raise _lc_error(400, "chat_inactive", "Chat is inactive")
        stored = {
            **copy.deepcopy(event),
            "id": self._next_event_id(thread["id"]),
            "visibility": visibility,
            "created_at": _now_iso(),
            "author_id": self.api_agent_id,
        }
        thread["events"].append(stored)
        envelopes.append(
            self.make_envelope(
                "incoming_event",
                {"chat_id": chat_id, "thread_id": thread["id"], "event": copy.deepcopy(stored)},
            )
        )
        return {"event_id": stored["id"]}

    def _a_deactivate_chat(self, body: dict[str, Any], envelopes: list) -> dict:
        chat = self.chats.get(_require_str(body, "id"))
        if chat is None:
            raise _lc_error(400, "not_found", "Chat not found")
        envelopes.append(self._deactivate(chat, self.api_agent_id))
        return {}

    def _a_transfer_chat(self, body: dict[str, Any], envelopes: list) -> dict:
        chat = self.chats.get(_require_str(body, "id"))
        if chat is None:
            raise _lc_error(400, "not_found", "Chat not found")
        target = _object(_require(body, "target"), "target")
        ids = _require(target, "ids", "target.")
        if target.get("type") == "group":
            envelopes.append(self._transfer(chat, list(ids), []))
        elif target.get("type") == "agent":
            envelopes.append(self._transfer(chat, [], list(ids)))
        else:
            raise _validation("`target.type` must be `group` or `agent`")
        return {}

    def _a_get_customer(self, body: dict[str, Any], envelopes: list) -> dict:
        customer = self.customers.get(_require_str(body, "id"))
        if customer is None:
            raise _lc_error(400, "not_found", "Customer not found")
        chat = self._chat_of(customer["id"])
        return {**customer, "type": "customer", "chat_ids": [chat["id"]] if chat else []}

    # ------------------------------------------------------------------ Configuration API

    @staticmethod
    def _agent_record(agent_id: str, name: str, role: str) -> dict[str, Any]:
        return {
            "id": agent_id,
            "name": name,
            "role": role,
            "login_status": "accepting chats",
            "max_chats_count": 6,
            "job_title": "Support Agent",
            "groups": [{"id": 0, "priority": "normal"}],
        }

    def _cfg_register_webhook(self, body: dict[str, Any], envelopes: list) -> dict:
        url = _require_str(body, "url")
        action = _require_str(body, "action")
        _require_str(body, "secret_key")
        owner = _require_str(body, "owner_client_id")
        if _require_str(body, "type") not in ("license", "bot"):
            raise _validation("`type` must be `license` or `bot`")
        if not url.startswith(("http://", "https://")):
            raise _validation("`url` must be a URL")
        same = [
            w
            for w in self.webhooks.values()
            if (w["action"], w["owner_client_id"])
            == (
                action,
                owner,
            )
        ]
        if len(same) >= 3:
            raise _lc_error(400, "limit_reached", "Webhooks limit for this action reached")
        webhook_id = uuid.uuid4().hex
        self.webhooks[webhook_id] = {
            "id": webhook_id,
            "url": url,
            "action": action,
            "secret_key": body["secret_key"],
            "owner_client_id": owner,
            "type": body["type"],
            "description": body.get("description", ""),
            "filters": copy.deepcopy(body.get("filters", {})),
            "additional_data": copy.deepcopy(body.get("additional_data", [])),
        }
        return {"id": webhook_id}

    def _cfg_list_webhooks(self, body: dict[str, Any], envelopes: list) -> list:
        owner = _require_str(body, "owner_client_id")
        return [w for w in self.webhooks.values() if w["owner_client_id"] == owner]

    def _cfg_unregister_webhook(self, body: dict[str, Any], envelopes: list) -> dict:
        webhook_id = _require_str(body, "id")
        owner = _require_str(body, "owner_client_id")
        webhook = self.webhooks.get(webhook_id)
        if webhook is None or webhook["owner_client_id"] != owner:
            raise _lc_error(400, "not_found", "Webhook not found")
        del self.webhooks[webhook_id]
        return {}

    def _cfg_list_agents(self, body: dict[str, Any], envelopes: list) -> list:
        return list(self.agents.values())

    def _cfg_create_agent(self, body: dict[str, Any], envelopes: list) -> dict:
        agent_id = _require_str(body, "id")
        name = _require_str(body, "name")
        if "@" not in agent_id:
            raise _validation("`id` must be an e-mail address")
        max_chats = body.get("max_chats_count", 6)
        if not isinstance(max_chats, int) or not 0 <= max_chats <= 20:
            raise _validation("`max_chats_count` must be between 0 and 20")
        if agent_id in self.agents:
            raise _lc_error(400, "already_exists", f"Agent `{agent_id}` already exists")
        record = self._agent_record(agent_id, name, body.get("role", "normal"))
        for field in ("login_status", "job_title", "groups"):
            if field in body:
                record[field] = copy.deepcopy(body[field])
        record["max_chats_count"] = max_chats
        self.agents[agent_id] = record
        return {"id": agent_id}

    def _cfg_delete_agent(self, body: dict[str, Any], envelopes: list) -> dict:
        agent_id = _require_str(body, "id")
        if agent_id not in self.agents:
            raise _lc_error(400, "not_found", f"Agent `{agent_id}` not found")
        del self.agents[agent_id]
        return {}


# ---------------------------------------------------------------------- module helpers


def _name_matches(wanted: str, name: str) -> bool:
    if wanted == name:
        return True
    if wanted == "*":
        return name in CUSTOMER_METHODS
    api, sep, method = name.partition("/")
    return (
        bool(sep)
        and api in ("agent", "configuration")
        and method == wanted
        and (wanted not in CUSTOMER_METHODS)
    )


def _route(command: str, path: str) -> tuple[str, str, str]:
    """(api, name, version) of a request; api is accounts, customer, agent, configuration or
    unknown."""
    if command != "POST":
        return "unknown", f"{command} {path}", ""
    if path.rstrip("/") == "/v2/token":
        return "accounts", "token", ""
    if path.rstrip("/") == "/v2/customer/token":
        return "accounts", "customer_token", ""
    parts = path.strip("/").split("/")
    if len(parts) == 4 and parts[0].startswith("v") and parts[2] == "action":
        version, api, method = parts[0][1:], parts[1], parts[3]
        if api == "customer":
            return api, method, version
        if api in ("agent", "configuration"):
            return api, f"{api}/{method}", version
    return "unknown", path, ""


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


def _send(handler: BaseHTTPRequestHandler, answer: _Answer) -> None:
    data = json.dumps(answer.body).encode()
    try:
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in answer.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True  # the client gave up waiting (a slow() test)
