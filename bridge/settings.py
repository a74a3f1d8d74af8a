"""Settings, read from the environment (see the README for every variable)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    word = value.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    # A typo (SSL=ture) read as False would silently turn HTTPS, or a feature, off.
    raise ImproperlyConfigured(f"{name} must be true or false, not {value.strip()!r}.")


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_list(name: str) -> list[str]:
    return [item.strip() for item in env_str(name).split(",") if item.strip()]


def env_float(name: str, default: float, *, zero: bool = False) -> float:
    """A number of seconds: above 0 (or 0 too, with `zero`), and finite."""
    value = env_str(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        # Named, so that a mistyped config var says which it is instead of a bare traceback.
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}.") from None
    # VENDOR_READ_TIMEOUT=0 failed every message for good (requests refuses a 0 timeout); a 0 or
    # negative interval, backoff or lease would spin, and nan or inf compare as no number does.
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        least = "0 or more" if zero else "more than 0"
        raise ImproperlyConfigured(f"{name} must be a number {least}, not {value!r}.")
    return number


def env_int(name: str, default: int | None, *, minimum: int = 0) -> int | None:
    value = env_str(name)
    if not value:
        return default
    if not (value.isascii() and value.isdigit()):
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.")
    if int(value) < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value!r}.")
    return int(value)


DEBUG = env_bool("DEBUG")

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    # Local runs only: a fresh key per process is harmless because nothing we sign outlives it.
    SECRET_KEY = get_random_secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or (["*"] if DEBUG else [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off.")
for _host in ALLOWED_HOSTS:
    # An address pasted from the browser matches no request: every page would answer 400 while
    # the vendors' webhooks, answered before the host is looked at, go on working. So does a
    # name with a port (localhost:8000): Django compares the request's host without its port.
    # An IPv6 address's colons are inside its brackets ([::1]).
    if "/" in _host or ":" in _host.rpartition("]")[2]:
        raise ImproperlyConfigured(
            f"ALLOWED_HOSTS takes host names such as .herokuapp.com or bridge.example.com, "
            f"not addresses or ports: {_host!r}."
        )

INSTALLED_APPS = [
    "sessions_app.apps.BridgeAdminConfig",  # django.contrib.admin, sign-in rate-limited
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "sessions_app",
    "sandbox",
]

MIDDLEWARE = [
    # Counts the requests in progress, so that long polls give a thread back when all are taken.
    "sessions_app.thread_budget.BusyThreadsMiddleware",
    # Next, so that every log line of a request (redirects included) carries its id.
    "sessions_app.request_log.RequestIDMiddleware",
    # LINE's and LiveChat's webhooks are answered here, without the browser middleware below.
    "sessions_app.vendor_webhooks.VendorWebhookMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bridge.urls"
WSGI_APPLICATION = "bridge.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Seconds a connection is kept open for reuse: each thread's own when there is no pool, and the
# LINE inbox's (inbox.py) in any case.
CONN_MAX_AGE_SECONDS = 600
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=CONN_MAX_AGE_SECONDS,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker write at once: WAL lets readers go on, IMMEDIATE takes the
    # write lock at BEGIN so a transaction never fails half-way with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Seconds to connect, or fail. psycopg waits 130 s by default: a server that accepts but
    # does not answer (overloaded, half failed over) would hold a request thread, or one of the
    # pool's connecting threads, for that long. The LINE inbox waits 2 (inbox.py).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    # Milliseconds that what was sent may go unacknowledged before the connection is given up
    # (libpq's tcp_user_timeout). A server that vanished (a failover whose old host died, a cut
    # link) drops packets instead of refusing them, and TCP alone resends for ~15 minutes while
    # each thread with a query in flight waits with it. A server that is only slow still
    # acknowledges at once, so a long query is not cut short. The LINE inbox gives up after 2 s.
    DATABASES["default"]["OPTIONS"].setdefault("tcp_user_timeout", 5000)
    # And once a query is acknowledged, nothing of ours is unacknowledged while the server works
    # on it: only a keepalive tells a server that vanished meanwhile from one still at work, and
    # the system's default sends the first after two hours. Here, after 5 s of silence, then
    # every second; one unanswered for tcp_user_timeout ends the connection.
    DATABASES["default"]["OPTIONS"].setdefault("keepalives_idle", 5)
    DATABASES["default"]["OPTIONS"].setdefault("keepalives_interval", 1)

# Postgres: each process takes Django's connections from a pool of at most this many, shared by
# its threads, instead of one persistent connection per thread. Threads are sized for long polls
# (GUNICORN_THREADS), not for the database: one connection per thread took 16 for the web dyno
# and 5 for the worker, past the 20 that the smallest Heroku Postgres plans allow. 0: no
# pool, a persistent connection per thread.
DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 4)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL_SIZE:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # given back to the pool, which keeps it open
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_SIZE,
        # A request that finds every connection taken, or the server away, waits this long and
        # is then answered 503 (api/errors.py, the webhooks' views). A connection is held for
        # milliseconds (db_pool.py; a token refresh holds one through its HTTP call), so a
        # longer wait means an outage, and LiveChat gives up on a webhook answer after ~10 s.
        "timeout": 5,
        # A failed connection attempt is retried after 1, 2, 4, 8… s until this, after which the
        # next request tries at once. With psycopg_pool's 300 s, the pool went on failing for up
        # to as long again as Postgres had been away (measured: 51 s after a 70 s outage).
        "reconnect_timeout": 2,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "ja"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# The JSON API's bodies are a line id and one chat message; anything near this size is abuse.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

SSL = env_bool("SSL")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = SSL
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$"]
SESSION_COOKIE_SECURE = SSL
CSRF_COOKIE_SECURE = SSL
SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365 if SSL else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SSL
SECURE_HSTS_PRELOAD = SSL

# JSON API calls allowed per API key, per web process ("600/min", "20/s", "off"): a guard against
# a runaway client. The counts are in the default cache, i.e. per process (see the README).
BRIDGE_API_RATE = env_str("BRIDGE_API_RATE", "600/min")
_calls, _, _period = BRIDGE_API_RATE.partition("/")
if BRIDGE_API_RATE.lower() in {"off", "none", "0"}:
    BRIDGE_API_RATE = ""
elif not (_calls.isdigit() and int(_calls) > 0 and _period in {"s", "min", "hour", "day"}):
    raise ImproperlyConfigured(
        f'BRIDGE_API_RATE must look like "600/min" (s, min, hour or day) or "off", '
        f"not {BRIDGE_API_RATE!r}."
    )

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["sessions_app.api.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["sessions_app.api.auth.BridgeAPIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # The rate is read from BRIDGE_API_RATE on each request, not from DEFAULT_THROTTLE_RATES.
    "DEFAULT_THROTTLE_CLASSES": ["sessions_app.api.throttling.APIKeyRateThrottle"],
    "EXCEPTION_HANDLER": "sessions_app.api.errors.liveagent_exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Heroku's router appends the client's address to X-Forwarded-For: the last entry is the one
    # to count (the admin's sign-in limit per address).
    "NUM_PROXIES": 1,
}

# DEBUG's error page hides settings by name; LIVECHAT_PAT's name would not be hidden by Django's.
DEFAULT_EXCEPTION_REPORTER_FILTER = "sessions_app.request_log.SecretSettingsFilter"

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {env_str('LOG_LEVEL')!r}."
    )
# One line per record, key=value (logfmt, as Heroku's router writes), with the request id, and
# bearer tokens and the configured secrets masked (sessions_app/request_log.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "sessions_app.request_log.RequestIDFilter"}},
    "formatters": {"logfmt": {"()": "sessions_app.request_log.LogfmtFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "logfmt",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.server": {"level": "WARNING"}},
}

# gunicorn reads these (gunicorn.conf.py). Checked here too: the release phase runs `migrate`, not
# gunicorn, and a bad value should fail the release, not every web dyno as it boots.
# 0 processes or threads would serve nothing (gunicorn listens with no worker, or none boots).
for _name in ("WEB_CONCURRENCY", "GUNICORN_THREADS"):
    env_int(_name, None, minimum=1)
env_int("GUNICORN_MAX_REQUESTS", None)

# --- The bridge ---------------------------------------------------------------------------

BRIDGE_API_KEY = env_str("BRIDGE_API_KEY")

LINE_CHANNEL_SECRET = env_str("LINE_CHANNEL_SECRET")
LINE_CHANNEL_ACCESS_TOKEN = env_str("LINE_CHANNEL_ACCESS_TOKEN")
LINE_API_BASE_URL = env_str("LINE_API_BASE_URL", "https://api.line.me")
LINE_DATA_API_BASE_URL = env_str("LINE_DATA_API_BASE_URL", "https://api-data.line.me")
LINE_FOLLOW_GREETING = env_str("LINE_FOLLOW_GREETING")

LIVECHAT_CLIENT_ID = env_str("LIVECHAT_CLIENT_ID")
LIVECHAT_CLIENT_SECRET = env_str("LIVECHAT_CLIENT_SECRET")
LIVECHAT_ORGANIZATION_ID = env_str("LIVECHAT_ORGANIZATION_ID")
LIVECHAT_REFRESH_TOKEN = env_str("LIVECHAT_REFRESH_TOKEN")
LIVECHAT_WEBHOOK_SECRET = env_str("LIVECHAT_WEBHOOK_SECRET")
LIVECHAT_GROUP_ID = env_int("LIVECHAT_GROUP_ID", None)
LIVECHAT_PAT = env_str("LIVECHAT_PAT")
LIVECHAT_ACCOUNT_ID = env_str("LIVECHAT_ACCOUNT_ID")
LIVECHAT_API_BASE_URL = env_str("LIVECHAT_API_BASE_URL", "https://api.livechatinc.com")
LIVECHAT_ACCOUNTS_BASE_URL = env_str("LIVECHAT_ACCOUNTS_BASE_URL", "https://accounts.livechat.com")
LIVECHAT_API_VERSION = env_str("LIVECHAT_API_VERSION", "3.6")

# Vendor calls: (connect, read) seconds. LiveChat answers `request_timeout` itself after 15 s.
VENDOR_TIMEOUT = (env_float("VENDOR_CONNECT_TIMEOUT", 3.05), env_float("VENDOR_READ_TIMEOUT", 10.0))

# Delivery worker.
DELIVERY_POLL_INTERVAL = env_float("DELIVERY_POLL_INTERVAL", 0.05)
DELIVERY_LEASE_SECONDS = env_float("DELIVERY_LEASE_SECONDS", 60.0)
DELIVERY_BACKOFF_BASE = env_float("DELIVERY_BACKOFF_BASE", 2.0)
DELIVERY_BACKOFF_MAX = env_float("DELIVERY_BACKOFF_MAX", 300.0)
DELIVERY_MAX_AGE_SECONDS = env_float("DELIVERY_MAX_AGE_SECONDS", 24 * 3600.0)
DELIVERY_THREADS = env_int("DELIVERY_THREADS", 4, minimum=1)  # 0: the worker would exit at once

# /messages long poll.
MESSAGES_MAX_WAIT = 25.0
MESSAGES_POLL_INTERVAL = env_float("MESSAGES_POLL_INTERVAL", 0.1)

# Notices the bridge sends users: Japanese by default, English for LINE users whose profile says
# so. BRIDGE_NOTICE_TEXTS overrides any of them, as JSON: {"ended": {"ja": "...", "en": "..."}}.
BRIDGE_DEFAULT_LANGUAGE = env_str("BRIDGE_DEFAULT_LANGUAGE", "ja")
try:
    BRIDGE_NOTICE_TEXTS = json.loads(env_str("BRIDGE_NOTICE_TEXTS") or "{}")
except json.JSONDecodeError as exc:
    raise ImproperlyConfigured(
        f'BRIDGE_NOTICE_TEXTS must be JSON such as {{"ended": {{"ja": "..."}}}}: {exc}'
    ) from None
if not isinstance(BRIDGE_NOTICE_TEXTS, dict) or not all(
    isinstance(texts, dict) and all(isinstance(text, str) for text in texts.values())
    for texts in BRIDGE_NOTICE_TEXTS.values()
):
    raise ImproperlyConfigured(
        'BRIDGE_NOTICE_TEXTS must map each notice to its texts by language, e.g. {"ended": {"ja": '
        '"...", "en": "..."}}.'
    )

# LiveChat connect (OAuth): the callback URL registered for the app in the Developer Console.
# Empty: built from the request (https://<host>/livechat/connect/callback).
LIVECHAT_REDIRECT_URI = env_str("LIVECHAT_REDIRECT_URI")

# The sandbox page (`manage.py sandbox` sets this in its own process only, never in production).
SANDBOX_UI = env_bool("SANDBOX_UI")

# Rich messages (media, pre-chat forms). LiveChat's upload_file takes files up to 10 MB; larger
# ones reach the agent as a note with their name and size.
LIVECHAT_UPLOAD_MAX_BYTES = env_int("LIVECHAT_UPLOAD_MAX_BYTES", 10 * 1024 * 1024)
# Fill in the LiveChat group's pre-chat form (one get_form call per chat start) when it has one.
LIVECHAT_PRECHAT_FORM = env_bool("LIVECHAT_PRECHAT_FORM", True)
# A video or audio LINE is still preparing (202) is asked for again with the worker's backoff for
# this long after it arrived; then the agent gets a note instead. The user's later messages wait
# behind it meanwhile, to keep their order.
LINE_CONTENT_MAX_WAIT_SECONDS = env_float("LINE_CONTENT_MAX_WAIT_SECONDS", 300.0, zero=True)
# One download from LINE may take this long in all (the worker's lease is DELIVERY_LEASE_SECONDS).
LINE_CONTENT_DOWNLOAD_SECONDS = env_float("LINE_CONTENT_DOWNLOAD_SECONDS", 30.0)
