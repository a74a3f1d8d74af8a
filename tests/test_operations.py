"""Running the bridge: request ids, one-line logs that keep bodies and tokens out, /healthz for
monitoring, the JSON API's rate limit, and a Heroku deploy that passes Django's checks."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from django.views.debug import ExceptionReporter

from sessions_app import health
from sessions_app.models import ChatSession, InboundEvent, LiveChatCredential, Message
from sessions_app.request_log import (
    LogfmtFormatter,
    RequestIDFilter,
    redact,
)
from tests.conftest import API_KEY, ROOT, BridgeAPI
from tests.fakes.line import sign, text_event

# --- request ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    ["f2a1c7e0-router-id", "a" * 200, "x"],  # Heroku keeps a client's id of up to 200 characters
)
def test_router_request_id_is_kept_and_answered(client, db, given):
    response = client.get("/healthz", headers={"X-Request-ID": given})
    assert response["X-Request-ID"] == given


@pytest.mark.parametrize(
    "given", [None, "", "a" * 201, "has space", 'quote"d', "new\nline", "key=v;drop"]
)
def test_missing_or_unsafe_request_id_is_replaced(client, db, given):
    headers = {"X-Request-ID": given} if given is not None else {}
    answered = client.get("/healthz", headers=headers)["X-Request-ID"]
    assert answered != given
    uuid.UUID(answered)


def test_request_id_is_on_every_log_line_of_the_request(client, settings, caplog):
    settings.LIVECHAT_WEBHOOK_SECRET = "the-webhook-secret"
    caplog.handler.addFilter(RequestIDFilter())
    with caplog.at_level(logging.INFO):
        response = client.post(
            "/livechat/webhook",
            {"action": "incoming_event", "secret_key": "wrong", "payload": {}},
            content_type="application/json",
            headers={"X-Request-ID": "req-42"},
        )
        logging.getLogger("sessions_app").info("outside any request")
    assert response.status_code == 403
    refused = [r for r in caplog.records if "wrong secret_key" in r.getMessage()]
    assert refused and all(r.request_id == "req-42" for r in refused)
    assert caplog.records[-1].request_id == "-"


def test_the_workers_lines_name_the_message_they_are_about(caplog, api, livechat, drain):
    caplog.handler.addFilter(RequestIDFilter())
    api.call("/init", {"line_id": "U1"})
    with caplog.at_level(logging.INFO):
        api.call("/send", {"line_id": "U1", "message": "hello"})
        drain()
    message = Message.objects.get(body="hello")
    [delivered] = [r for r in caplog.records if f"messages=[{message.pk}]" in r.getMessage()]
    assert delivered.request_id == f"msg-{message.pk}"
    with caplog.at_level(logging.INFO):
        logging.getLogger("sessions_app").info("after the delivery")
    assert caplog.records[-1].request_id == "-"


# --- the log format -----------------------------------------------------------------------------


def format_record(message: str, *args: object, exc_info: object = None) -> str:
    record = logging.LogRecord("sessions_app.x", logging.WARNING, __file__, 1, message, args, None)
    if exc_info:
        record.exc_info = exc_info
    RequestIDFilter().filter(record)
    return LogfmtFormatter().format(record)


def test_one_line_per_record_in_logfmt():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        line = format_record(
            "delivery failed route=%s error=%s",
            "livechat",
            'a "quoted" x\r\tforged',
            exc_info=sys.exc_info(),
        )
    # A carriage return would have a terminal draw the rest over the line's start.
    assert "\n" not in line and "\r" not in line and "\t" not in line
    assert re.match(r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=", line), line
    assert " level=warning logger=sessions_app.x request_id=- " in line
    assert 'msg="delivery failed route=livechat error=a \\"quoted\\" x\\r\\tforged"' in line
    assert 'exc="Traceback (most recent call last):\\n' in line
    assert "ValueError: bad\\nthing" in line


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("headers={'Authorization': 'Bearer dal:abcdefghijklmnopqrstuvwxyz'}", "abcdefghijklmnop"),
        ("Authorization: Bearer 0123456789abcdef", "0123456789abcdef"),
        ('{"access_token": "tok-123456789", "expires_in": 28800}', "tok-123456789"),
        ("grant_type=refresh_token&refresh_token=rt-987654321&client_id=x", "rt-987654321"),
        ("client_secret=cs-123456789 next", "cs-123456789"),
        ("stored dal:QWERTYUIOPASDFGHJKLZ", "QWERTYUIOPASDFGHJKLZ"),
        ("stored fra:QWERTYUIOPASDFGHJKLZ", "QWERTYUIOPASDFGHJKLZ"),
        # The Configuration API's Personal Access Token goes as Basic <base64 of account:PAT>.
        ("Authorization: Basic cGF0LWFjY291bnQ6ZGFsOnBhdA==", "cGF0LWFjY291bnQ6ZGFsOnBhdA=="),
        ("api_key=ak-123456789 route=livechat", "ak-123456789"),
        ('{"password": "pw-123456789"}', "pw-123456789"),
        ("LINE_CHANNEL_ACCESS_TOKEN=ct-123456789 is not the channel's", "ct-123456789"),
    ],
)
def test_tokens_are_masked_in_the_formatter(text, secret):
    masked = redact(text)
    assert secret not in masked and "[redacted]" in masked
    assert secret not in format_record("%s", text)


def test_configured_secrets_are_masked_wherever_they_appear(settings):
    settings.LINE_CHANNEL_ACCESS_TOKEN = "LINE+channel/access=token"
    settings.BRIDGE_API_KEY = "bridge-key-0123456789"
    line = format_record(
        "calling with %s and %s", "LINE+channel/access=token", "bridge-key-0123456789"
    )
    assert "LINE+channel" not in line and "bridge-key-0123456789" not in line
    assert redact("expires_in=28800 route=livechat") == "expires_in=28800 route=livechat"


@pytest.mark.parametrize(
    "name",
    [
        "SECRET_KEY",
        "BRIDGE_API_KEY",
        "LINE_CHANNEL_SECRET",
        "LINE_CHANNEL_ACCESS_TOKEN",
        "LIVECHAT_CLIENT_SECRET",
        "LIVECHAT_REFRESH_TOKEN",
        "LIVECHAT_WEBHOOK_SECRET",
        "LIVECHAT_PAT",
    ],
)
def test_each_configured_secret_is_masked_wherever_it_appears(settings, name):
    value = f"v{uuid.uuid4().hex}"
    setattr(settings, name, value)
    line = format_record("vendor answered (%s) for %s", value, "U1")
    assert value not in line and "[redacted]" in line


def test_a_configured_secret_of_eight_characters_is_masked_a_shorter_one_is_not(settings):
    settings.BRIDGE_API_KEY = "k3y-8chr"
    assert redact("calling with k3y-8chr") == "calling with [redacted]"
    # Shorter, it could be any word: masking it would garble lines, and a real key is longer.
    settings.BRIDGE_API_KEY = "route"
    assert redact("route=livechat") == "route=livechat"


def test_a_token_in_an_exceptions_message_is_masked_in_the_logged_traceback():
    token = f"dal:{uuid.uuid4().hex}"  # not a literal: the traceback quotes the source line
    try:
        raise RuntimeError(f"LiveChat answered 401 to Authorization: Bearer {token}")
    except RuntimeError:
        line = format_record("delivery crashed message=%s", 42, exc_info=sys.exc_info())
    assert "RuntimeError: LiveChat answered 401 to Authorization: Bearer [redacted]" in line
    assert token.removeprefix("dal:") not in line


USER = "U" + "a" * 32


def test_logs_at_info_hold_no_message_body_and_no_token(api, livechat, line, drain, caplog):
    """A whole conversation, both ways, through the JSON API and the LINE webhook."""
    bodies = ["api-user-body-3141", "agent-reply-body-2718", "line-user-body-1618", "agent-2-1414"]
    with caplog.at_level(logging.INFO):
        api.call("/init", {"line_id": "U1", "display_name": "Taro"})
        api.call("/send", {"line_id": "U1", "message": bodies[0]})
        drain()
        pulled = ChatSession.objects.get(line_id="U1")
        livechat.agent_says(pulled.chat_id, bodies[1])
        assert api.call("/messages", {"line_id": "U1", "wait": 5})["message"] == bodies[1]
        api.call("/close", {"line_id": "U1"})

        assert line.post_events([text_event(USER, bodies[2])])[0] == 200
        drain()
        pushed = ChatSession.objects.get(line_id=USER)
        livechat.agent_says(pushed.chat_id, bodies[3])
        drain()
        assert line.texts_for(USER) == [bodies[3]]
        # A failure is logged too, with the vendor's error: still no body.
        livechat.fail("send_event", status=400, error_type="validation")
        api.call("/send", {"line_id": "U1", "message": bodies[0]})
        drain()

    credential = LiveChatCredential.objects.get()
    tokens = [
        API_KEY,
        line.channel_access_token,
        line.channel_secret,
        livechat.client_secret,
        livechat.webhook_secret,
        credential.access_token,
        credential.refresh_token,
        *ChatSession.objects.exclude(customer_token="").values_list("customer_token", flat=True),
    ]
    assert all(tokens) and credential.access_token
    formatter = LogfmtFormatter()
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any("delivered" in r.getMessage() for r in records)  # the capture saw the worker
    for record in records:
        raw = record.getMessage() + (
            formatter.formatException(record.exc_info) if record.exc_info else ""
        )
        for secret in bodies + tokens:
            assert secret not in raw, (secret, record.name, raw)


# --- /healthz ----------------------------------------------------------------------------------


def make_message(session: ChatSession, route: str, status: str, age: float) -> Message:
    return Message.objects.create(
        session=session,
        direction=Message.Direction.TO_USER
        if route != Message.Route.LIVECHAT
        else Message.Direction.TO_AGENT,
        route=route,
        body="x",
        status=status,
        created_at=timezone.now() - timedelta(seconds=age),
    )


def test_healthz_reports_credentials_configuration_and_outbox(client, settings, db):
    settings.LINE_CHANNEL_SECRET = "s"
    settings.LINE_CHANNEL_ACCESS_TOKEN = "t"
    settings.LIVECHAT_CLIENT_ID = "id"
    settings.LIVECHAT_CLIENT_SECRET = "secret"
    settings.LIVECHAT_ORGANIZATION_ID = "org"
    settings.LIVECHAT_REFRESH_TOKEN = ""
    LiveChatCredential.objects.create(
        access_token="dal:access",
        access_token_expires_at=timezone.now() + timedelta(hours=1),
        refresh_token="dal:refresh",
    )
    session = ChatSession.objects.create(line_id="U1")
    make_message(session, Message.Route.LIVECHAT, Message.Status.PENDING, 120)
    make_message(session, Message.Route.LIVECHAT, Message.Status.PENDING, 5)
    make_message(session, Message.Route.LINE_PUSH, Message.Status.FAILED, 900)
    make_message(session, Message.Route.LIVECHAT, Message.Status.FAILED, 900)
    make_message(session, Message.Route.LIVECHAT, Message.Status.FAILED, 60)
    make_message(session, Message.Route.LIVECHAT, Message.Status.SENT, 900)

    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok"
    assert body["line"] == {"configured": True}
    livechat = body["livechat"]
    assert livechat["credentials"] == "access_token" and livechat["usable"] is True
    assert 3500 < livechat["access_token_expires_in"] <= 3600
    outbox = body["outbox"]
    assert outbox["pending"] == {"livechat": 2, "line_push": 0, "line_read": 0, "api_pull": 0}
    assert 119 <= outbox["oldest_pending_seconds"]["livechat"] <= 125
    assert outbox["oldest_pending_seconds"]["line_push"] is None
    assert outbox["failed"] == {"livechat": 2, "line_push": 1, "line_read": 0, "api_pull": 0}
    assert outbox["failed_total"] == 3
    assert body["inbox"] == {"pending": 0, "oldest_pending_seconds": None}
    assert "dal:access" not in response.content.decode()


def test_a_message_an_operator_retried_has_waited_since_the_retry(client, db):
    session = ChatSession.objects.create(line_id="U1")
    retried = make_message(session, Message.Route.LIVECHAT, Message.Status.PENDING, 2 * 86400)
    retried.requeued_at = timezone.now() - timedelta(seconds=60)
    retried.save(update_fields=["requeued_at"])
    make_message(session, Message.Route.LIVECHAT, Message.Status.PENDING, 30)

    outbox = client.get("/healthz").json()["outbox"]
    assert 59 <= outbox["oldest_pending_seconds"]["livechat"] <= 65
    out = io.StringIO()
    call_command("bridge_status", stdout=out)
    assert f"outbox livechat: 2 waiting since {retried.requeued_at:%Y-%m-%d %H:%M:%S}" in (
        out.getvalue()
    )


def test_healthz_shows_line_events_the_worker_has_not_applied(client, db):
    for age, applied in ((300, False), (30, False), (900, True)):
        InboundEvent.objects.create(
            source=InboundEvent.Source.LINE,
            event_id=f"E{age}",
            received_at=timezone.now() - timedelta(seconds=age),
            applied_at=timezone.now() if applied else None,
        )
    inbox = client.get("/healthz").json()["inbox"]
    assert inbox["pending"] == 2
    assert 299 <= inbox["oldest_pending_seconds"] <= 305


def test_healthz_livechat_credentials_states(client, settings, db):
    settings.LIVECHAT_REFRESH_TOKEN = ""
    body = client.get("/healthz").json()
    assert body["livechat"]["credentials"] == "missing"
    assert body["livechat"]["usable"] is False
    assert "LIVECHAT_REFRESH_TOKEN" in body["not_configured"]["livechat"]

    settings.LIVECHAT_REFRESH_TOKEN = "seed"
    assert client.get("/healthz").json()["livechat"]["credentials"] == "refresh_token"
    settings.LIVECHAT_CLIENT_ID = "id"
    settings.LIVECHAT_CLIENT_SECRET = "secret"
    settings.LIVECHAT_ORGANIZATION_ID = "org"
    assert client.get("/healthz").json()["livechat"]["usable"] is True
    # A token is not enough: the token service needs the app's id and secret too.
    settings.LIVECHAT_CLIENT_SECRET = ""
    livechat = client.get("/healthz").json()["livechat"]
    assert livechat["credentials"] == "refresh_token" and livechat["usable"] is False
    settings.LIVECHAT_CLIENT_SECRET = "secret"

    settings.LIVECHAT_REFRESH_TOKEN = ""
    LiveChatCredential.objects.create(
        access_token="dal:old", access_token_expires_at=timezone.now() - timedelta(minutes=1)
    )
    assert client.get("/healthz").json()["livechat"]["credentials"] == "missing"
    LiveChatCredential.objects.update(refresh_token="dal:rotated")
    livechat = client.get("/healthz").json()["livechat"]
    assert livechat["credentials"] == "refresh_token"
    assert livechat["access_token_expires_in"] is None


def test_healthz_is_503_only_when_the_database_does_not_answer(client, monkeypatch, db):
    class DeadConnection:
        def cursor(self):
            raise OperationalError("connection refused")

    monkeypatch.setattr(health, "connection", DeadConnection())
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "unavailable: OperationalError"}


class Undo(Exception):
    """Rolls the test's schema change back."""


def test_healthz_stays_200_when_the_database_answers_but_its_tables_are_not_there(client, db):
    # As before the first migrate: every dyno would be alike, so none is taken out of the load
    # balancer, and the body says what failed.
    with pytest.raises(Undo), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE sessions_app_inboundevent")
        response = client.get("/healthz")
        raise Undo
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok"
    assert body["error"].startswith("database query failed: ")
    assert "inbox" not in body


def test_healthz_stays_200_when_vendors_are_not_configured(client, settings, db):
    settings.LINE_CHANNEL_ACCESS_TOKEN = ""
    settings.LIVECHAT_CLIENT_ID = ""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["line"] == {"configured": False}
    assert response.json()["livechat"]["configured"] is False


# --- the JSON API's rate limit ---------------------------------------------------------------


@pytest.fixture
def fresh_throttle():
    cache.clear()
    yield
    cache.clear()


def test_api_answers_429_json_after_the_limit(api, live_server, settings, fresh_throttle):
    settings.BRIDGE_API_RATE = "3/min"
    api.call("/init", {"line_id": "U1"})
    api.call("/messages", {"line_id": "U1", "wait": 0})
    api.call("/messages", {"line_id": "U1", "wait": 0})
    response = api.post("/messages", {"line_id": "U1", "wait": 0})
    assert response.status_code == 429
    assert response.json() == {"type": "bad", "message": "too many requests"}
    assert 1 <= int(response.headers["Retry-After"]) <= 61
    # Without the key it is still "unauthorized", not a throttled answer.
    anonymous = BridgeAPI(live_server.url, key=None).post("/messages", {"line_id": "U1"})
    assert anonymous.status_code == 401


def test_rate_off_means_no_limit(api, settings, fresh_throttle):
    settings.BRIDGE_API_RATE = ""
    api.call("/init", {"line_id": "U1"})
    for _ in range(5):
        api.call("/messages", {"line_id": "U1", "wait": 0})


def production_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("LINE_", "LIVECHAT_"))}
    return {
        **keep,
        "DJANGO_SETTINGS_MODULE": "bridge.settings",
        "SECRET_KEY": "a-production-like-secret-key-" + "k" * 40,
        "ALLOWED_HOSTS": "bridge.example.herokuapp.com",
        "SSL": "True",
        "DEBUG": "False",
        "DATABASE_URL": f"sqlite:///{tempfile.gettempdir()}/bridge-check-{uuid.uuid4().hex}.sqlite3",
        **extra,
    }


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BRIDGE_API_RATE", "lots"),
        ("DATABASE_POOL_SIZE", "x"),
        ("DELIVERY_THREADS", "4.0"),
        ("LIVECHAT_GROUP_ID", "sales"),
        ("LIVECHAT_UPLOAD_MAX_BYTES", "10MB"),
        ("VENDOR_READ_TIMEOUT", "10s"),
        ("LOG_LEVEL", "verbose"),
        ("BRIDGE_NOTICE_TEXTS", "{'ended': {'ja': 'x'}}"),
        ("BRIDGE_NOTICE_TEXTS", '["ended"]'),
        ("BRIDGE_NOTICE_TEXTS", '{"ended": "bye"}'),
        ("GUNICORN_THREADS", "eight"),  # fails the release, before any web dyno boots with it
        ("DELIVERY_THREADS", "\u00b2"),
        # A mistyped switch must not be read as off: SSL=ture would drop HTTPS and HSTS.
        ("SSL", "ture"),
        ("DEBUG", "flase"),
        ("LIVECHAT_PRECHAT_FORM", "disabled"),
        # No worker process or thread: the web dyno would listen and never answer, the worker
        # would exit at once (and be restarted, again and again), with nothing logged.
        ("WEB_CONCURRENCY", "0"),
        ("GUNICORN_THREADS", "0"),
        ("DELIVERY_THREADS", "0"),
        # requests refuses a 0 timeout: every message was failed for good at its first send.
        ("VENDOR_READ_TIMEOUT", "0"),
        ("DELIVERY_POLL_INTERVAL", "-1"),
        ("DELIVERY_BACKOFF_MAX", "nan"),
        ("LINE_CONTENT_MAX_WAIT_SECONDS", "-5"),
        # Matches no Host header: every page but the vendors' webhooks would answer 400.
        ("ALLOWED_HOSTS", "https://my-bridge-0123456789ab.herokuapp.com/"),
        # So does a name with a port: Django compares the request's host without its port.
        ("ALLOWED_HOSTS", "bridge.example.com:443"),
        ("ALLOWED_HOSTS", "localhost:8000"),
        # Required with DEBUG off: a key made up per process would differ between dynos.
        ("SECRET_KEY", ""),
        ("ALLOWED_HOSTS", ""),
        # The worker would wait forever between tries, or fail every message at its first.
        ("DELIVERY_BACKOFF_MAX", "inf"),
        ("DELIVERY_MAX_AGE_SECONDS", "0"),
        ("LINE_CONTENT_DOWNLOAD_SECONDS", "0"),
        ("BRIDGE_API_RATE", "0/min"),  # every JSON API call would be answered 429
        ("BRIDGE_NOTICE_TEXTS", '{"ended": {"ja": 1}}'),
        ("GUNICORN_MAX_REQUESTS", "lots"),
    ],
)
def test_a_malformed_setting_stops_the_release_and_names_itself(name, value):
    result = manage("check", env=production_env(**{name: value}))
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: " + name), last_line


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("True", True),
        (" yes ", True),
        ("1", True),
        ("ON", True),
        ("False", False),
        ("no", False),
        ("0", False),
        ("off", False),
        ("", None),
    ],
)
def test_a_switch_is_read_in_its_usual_spellings(monkeypatch, value, expected):
    from bridge.settings import env_bool

    monkeypatch.setenv("SSL", value)
    assert env_bool("SSL", default=None) is expected


def test_the_least_values_the_readme_allows_are_allowed():
    least = production_env(
        ALLOWED_HOSTS=".herokuapp.com,[::1]",  # an IPv6 address's colons are no port
        LINE_CONTENT_MAX_WAIT_SECONDS="0",
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="1",
        DELIVERY_THREADS="1",
        GUNICORN_MAX_REQUESTS="0",  # never replaced
        DATABASE_POOL_SIZE="0",  # no pool
        BRIDGE_API_RATE="Off",
    )
    result = manage("check", env=least)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("level", ["debug", "WARN", "warning"])
def test_the_log_level_is_any_logging_name_in_any_case(level):
    result = manage("check", env=production_env(LOG_LEVEL=level))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("GUNICORN_THREADS", "eight", "must be a whole number, not 'eight'"),
        ("WEB_CONCURRENCY", "0", "must be at least 1, not '0'"),
        ("GUNICORN_THREADS", "0", "must be at least 1, not '0'"),
    ],
)
def test_a_bad_gunicorn_setting_stops_gunicorn_with_its_name(name, value, said):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "gunicorn.conf.py",
            "--check-config",
            "bridge.wsgi",
        ],
        cwd=ROOT,
        env=production_env(**{name: value, "PORT": "0"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"{name} {said}" in result.stdout + result.stderr


# --- Heroku ------------------------------------------------------------------------------------


def test_check_before_the_first_migrate_names_every_missing_vendor_setting():
    env = production_env()  # no LINE_*, LIVECHAT_* or BRIDGE_API_KEY, a database not migrated
    env.pop("BRIDGE_API_KEY", None)
    result = manage("check", "--deploy", env=env)
    Path(env["DATABASE_URL"].removeprefix("sqlite:///")).unlink(missing_ok=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "bridge.W001" in output and "LINE_CHANNEL_SECRET" in output
    assert "bridge.W002" in output and "LIVECHAT_REFRESH_TOKEN" in output
    livechat = next(x for x in output.splitlines() if "bridge.W002" in x)
    assert livechat.count("no chat can be started") == 1  # four settings missing, said once
    assert "bridge.W003" in output and "BRIDGE_API_KEY" in output


def test_a_partial_configuration_is_told_what_is_still_broken_not_what_works():
    env = production_env()
    env.update(LINE_CHANNEL_SECRET="s" * 32, BRIDGE_API_KEY="k" * 32)  # no LINE access token
    env.update(
        LIVECHAT_CLIENT_ID="id",
        LIVECHAT_CLIENT_SECRET="secret",
        LIVECHAT_ORGANIZATION_ID="org",
        LIVECHAT_REFRESH_TOKEN="dal:token",
    )  # but no LIVECHAT_WEBHOOK_SECRET
    result = manage("check", "--deploy", env=env)
    Path(env["DATABASE_URL"].removeprefix("sqlite:///")).unlink(missing_ok=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    line = next(x for x in output.splitlines() if "bridge.W001" in x)
    assert "LINE_CHANNEL_ACCESS_TOKEN" in line and "nothing reaches LINE users" in line
    assert "webhook refuses" not in line  # the secret is set: LINE's webhook works
    livechat = next(x for x in output.splitlines() if "bridge.W002" in x)
    assert "LIVECHAT_WEBHOOK_SECRET" in livechat and "webhooks are refused" in livechat
    assert "no chat can be started" not in livechat
    assert "bridge.W003" not in output


def test_a_missing_refresh_token_names_the_connect_page_too(settings):
    settings.LIVECHAT_REFRESH_TOKEN = ""
    assert "/livechat/connect" in health.what_stops(["LIVECHAT_REFRESH_TOKEN"])


def test_deploy_check_has_no_security_warning():
    env = production_env()
    result = manage("check", "--deploy", env=env)
    Path(env["DATABASE_URL"].removeprefix("sqlite:///")).unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr
    assert "security.W" not in result.stdout + result.stderr


def test_app_json_matches_the_procfile_and_the_settings():
    app = json.loads((ROOT / "app.json").read_text())
    procfile = (ROOT / "Procfile").read_text()
    for process in app["formation"]:
        assert f"{process}:" in procfile
    assert {"web", "worker"} <= set(app["formation"])
    assert app["stack"] == "heroku-24"
    assert app["buildpacks"] == [{"url": "heroku/python"}]
    env = app["env"]
    assert env["SECRET_KEY"]["generator"] == "secret"
    assert env["BRIDGE_API_KEY"]["generator"] == "secret"
    assert env["ALLOWED_HOSTS"]["required"] is True
    settings_text = (ROOT / "bridge" / "settings.py").read_text()
    for name, spec in env.items():
        assert f'"{name}"' in settings_text, f"{name} is read nowhere"
        assert spec.get("description"), name


def test_heroku_builds_the_python_minor_version_the_tests_run_on():
    # Major.minor only: the buildpack takes its latest patch, which it has for every stack.
    tested = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert (ROOT / "runtime.txt").read_text().strip() == f"python-{tested}"
    assert (ROOT / ".python-version").read_text().strip() == tested


def test_app_json_hosts_admit_a_new_heroku_apps_address(client, settings, db):
    # Heroku has named new apps <name>-<12 hex digits>.herokuapp.com since 2023.
    hosts = json.loads((ROOT / "app.json").read_text())["env"]["ALLOWED_HOSTS"]["value"]
    settings.ALLOWED_HOSTS = hosts.split(",")
    response = client.get("/healthz", HTTP_HOST="my-line-bridge-1a2b3c4d5e6f.herokuapp.com")
    assert response.status_code != 400
    assert client.get("/healthz", HTTP_HOST="bridge.example.com").status_code == 400


def test_the_https_redirect_is_for_browsers_not_for_the_vendor_webhooks(client, settings, db):
    settings.SECURE_SSL_REDIRECT = True
    settings.LINE_CHANNEL_SECRET = "line-secret"
    assert client.get("/admin/").status_code == 301
    # Nor for a monitor probing /healthz over plain HTTP.
    assert client.get("/healthz").status_code == 200
    # A webhook sent over plain HTTP is answered: a 301 would reach LINE after the body had
    # crossed the network anyway, and LINE does not resend a redirected POST.
    body = json.dumps({"destination": "U0", "events": []}).encode()
    answer = client.post(
        "/line/webhook",
        body,
        content_type="application/json",
        headers={"X-Line-Signature": sign("line-secret", body)},
    )
    assert answer.status_code == 200


PAT = f"pat-{uuid.uuid4().hex}"  # not a literal: the page quotes the test's own source lines
LINE_SECRET = f"line-secret-{uuid.uuid4().hex}"


def test_debugs_error_page_hides_every_secret_setting(settings, rf):
    # An operator who turns DEBUG on to chase a problem must not publish the PAT, whose name
    # Django's own filter does not recognise.
    settings.DEBUG = True
    settings.LIVECHAT_PAT = PAT
    settings.LINE_CHANNEL_SECRET = LINE_SECRET
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        page = ExceptionReporter(rf.get("/"), *sys.exc_info()).get_traceback_html()
    assert "LIVECHAT_PAT" in page
    assert PAT not in page
    assert LINE_SECRET not in page
