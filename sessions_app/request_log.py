"""A request id on every log line, and log lines that are one line each.

- `RequestIDMiddleware` takes Heroku's `X-Request-ID` (the id in the router's log line) when it is
  well formed, or makes one, keeps it in a context variable for the request, and answers it in
  the `X-Request-ID` response header.
- `RequestIDFilter` stamps every record with `request_id`: the request's, or what the worker bound
  with `bound_request_id()`, or `-`.
- `LogfmtFormatter` writes `key=value` lines (Heroku's own log format), a traceback included on
  the same line, and masks bearer tokens, `*token`/`*secret` values and the configured secrets:
  a safety net, not a licence to log them.

Nothing here touches the database or the app registry: logging is configured before apps load."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.debug import SafeExceptionReporterFilter

NO_REQUEST = "-"
HEADER = "X-Request-ID"
# Heroku keeps a client's id when it is 20-200 of [A-Za-z0-9+=/-], else makes a UUID; we take a
# little more (dots, colons, underscores, @) but never spaces, quotes or control characters,
# which could forge log fields.
_VALID_ID = re.compile(r"[A-Za-z0-9._:+=/@-]{1,200}")

_request_id: ContextVar[str] = ContextVar("request_id", default=NO_REQUEST)


def current_request_id() -> str:
    return _request_id.get()


@contextmanager
def bound_request_id(value: str) -> Iterator[None]:
    """Tag the log lines of a unit of work outside a request, e.g. `msg-42` in the worker."""
    token = _request_id.set(value if _VALID_ID.fullmatch(value or "") else NO_REQUEST)
    try:
        yield
    finally:
        _request_id.reset(token)


def request_id_from(header: str | None) -> str:
    """The router's id when it is safe to log, otherwise a new one."""
    if header and _VALID_ID.fullmatch(header):
        return header
    return str(uuid.uuid4())


class RequestIDMiddleware:
    """First in MIDDLEWARE, so that every line logged for a request carries its id."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_from(request.headers.get(HEADER))
        request.request_id = request_id
        token = _request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response[HEADER] = request_id
        return response


class RequestIDFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


# --- redaction -------------------------------------------------------------------------------

_MASK = "[redacted]"
_REDACTIONS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer <token>  (also "Basic <base64>")
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',;]+"), rf"\1\2{_MASK}"),
    # access_token=..., "refresh_token": "...", client_secret=..., secret_key: ..., password=...
    (
        re.compile(
            r"(?i)(\b\w*(?:token|secret|password|api_?key)\w*[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',&;}\]\\]+"
        ),
        rf"\1{_MASK}",
    ),
    # LiveChat tokens carry their region as a prefix: dal:..., fra:...
    (re.compile(r"\b(dal|fra):[A-Za-z0-9_\-]{16,}"), rf"\1:{_MASK}"),
]
# Settings whose values must never be printed, wherever they turn up in a line.
SECRET_SETTINGS = (
    "SECRET_KEY",
    "BRIDGE_API_KEY",
    "LINE_CHANNEL_SECRET",
    "LINE_CHANNEL_ACCESS_TOKEN",
    "LIVECHAT_CLIENT_SECRET",
    "LIVECHAT_REFRESH_TOKEN",
    "LIVECHAT_WEBHOOK_SECRET",
    "LIVECHAT_PAT",
)


class SecretSettingsFilter(SafeExceptionReporterFilter):
    """DEBUG's error page hides, besides what Django's names hide, every secret setting above."""

    hidden_settings = re.compile(
        "|".join([SafeExceptionReporterFilter.hidden_settings.pattern, *SECRET_SETTINGS]),
        flags=re.IGNORECASE,
    )


def redact(text: str) -> str:
    for name in SECRET_SETTINGS:
        value = getattr(settings, name, "")
        # Short values would mask ordinary words; real secrets are long.
        if isinstance(value, str) and len(value) >= 8 and value in text:
            text = text.replace(value, _MASK)
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


# --- one line per record ---------------------------------------------------------------------

_NEEDS_QUOTES = re.compile(r"[\s\"=\\]")


def logfmt_value(value: object) -> str:
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """`ts=... level=info logger=... request_id=... msg="..." [exc="..."]`, one line a record.

    logfmt rather than JSON: it is what Heroku's router and platform write, `heroku logs --tail`
    stays readable, and the log add-ons parse its fields without configuration."""

    def format(self, record: logging.LogRecord) -> str:
        timestamp = datetime.fromtimestamp(record.created, tz=UTC)
        fields = [
            ("ts", timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("request_id", getattr(record, "request_id", NO_REQUEST)),
            ("msg", redact(record.getMessage())),
        ]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields.append(("exc", redact(record.exc_text)))
        if record.stack_info:
            fields.append(("stack", self.formatStack(record.stack_info)))
        # Redacted before quoting, so that the patterns see the text as it was logged.
        return " ".join(f"{key}={logfmt_value(value)}" for key, value in fields)
