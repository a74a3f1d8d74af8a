"""Fixtures: the bridge served over real HTTP (pytest-django's live server), the fake vendors on
127.0.0.1, and an HTTP client for the JSON API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from django.core.cache import cache
from django.db import connection

from sessions_app import delivery
from sessions_app.models import InboundEvent, Message
from tests.fakes.line import FakeLine
from tests.fakes.livechat import FakeLiveChat

API_KEY = "test-bridge-api-key"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def empty_rate_limit_counts() -> None:
    """Each test starts with no calls counted (the rate limits count in the default cache)."""
    cache.clear()


@pytest.fixture
def livechat(settings, live_server) -> Iterator[FakeLiveChat]:
    fake = FakeLiveChat().start()
    settings.LIVECHAT_API_BASE_URL = fake.base_url
    settings.LIVECHAT_ACCOUNTS_BASE_URL = fake.base_url
    settings.LIVECHAT_CLIENT_ID = fake.client_id
    settings.LIVECHAT_CLIENT_SECRET = fake.client_secret
    settings.LIVECHAT_ORGANIZATION_ID = fake.organization_id
    settings.LIVECHAT_REFRESH_TOKEN = fake.valid_refresh_token
    settings.LIVECHAT_WEBHOOK_SECRET = fake.webhook_secret
    settings.BRIDGE_API_KEY = API_KEY
    fake.webhook_url = f"{live_server.url}/livechat/webhook"
    yield fake
    fake.stop()


@pytest.fixture
def line(settings, live_server, livechat) -> Iterator[FakeLine]:
    """A fake LINE platform whose webhooks reach the bridge, signed with the channel secret."""
    fake = FakeLine().start()
    settings.LINE_API_BASE_URL = fake.base_url
    settings.LINE_DATA_API_BASE_URL = fake.data_base_url
    settings.LINE_CHANNEL_SECRET = fake.channel_secret
    settings.LINE_CHANNEL_ACCESS_TOKEN = fake.channel_access_token
    fake.webhook_url = f"{live_server.url}/line/webhook"
    yield fake
    fake.stop()


class BridgeAPI:
    """The liveagent-style client: a LINE bot server calling /init, /send, /messages, /close."""

    def __init__(self, base_url: str, key: str | None = API_KEY) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        if key:
            self.http.headers["Authorization"] = f"Bearer {key}"

    def post(self, path: str, body: object = None, **kwargs: object) -> requests.Response:
        return self.http.post(f"{self.base_url}{path}", json=body, timeout=30, **kwargs)

    def call(self, path: str, body: object) -> dict:
        response = self.post(path, body)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def api(live_server, livechat) -> BridgeAPI:
    return BridgeAPI(live_server.url)


def wait_until(condition: Callable[[], object], timeout: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def pending(routes=delivery.WORKER_ROUTES) -> int:
    """Rows waiting for the worker, and LINE events it has not applied yet."""
    return (
        Message.objects.filter(status=Message.Status.PENDING, route__in=routes).count()
        + InboundEvent.objects.filter(applied_at__isnull=True).count()
    )


@pytest.fixture
def drain() -> Callable[..., None]:
    """Run the delivery worker's own loop in the test until nothing is left to deliver."""

    def run(timeout: float = 15.0, routes=delivery.WORKER_ROUTES) -> None:
        deadline = time.monotonic() + timeout
        while pending(routes) and time.monotonic() < deadline:
            if not delivery.run_once(routes):
                time.sleep(0.02)
        assert not pending(routes), list(
            Message.objects.filter(status=Message.Status.PENDING).values("id", "last_error")
        )

    return run


def drain_in_background(drain: Callable[..., None]) -> threading.Thread:
    """The worker's loop in a thread of its own, started, while the test goes on; join it."""

    def work() -> None:
        try:
            drain(timeout=20)
        finally:
            connection.close()  # a thread's pooled connection goes back only when closed

    worker = threading.Thread(target=work)
    worker.start()
    return worker


def database_url() -> str:
    """The URL of the database the tests run on, for worker subprocesses."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    host = s["HOST"] or "localhost"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{host}:{s['PORT'] or 5432}/{s['NAME']}"


def process_environment(settings, **env: str) -> dict[str, str]:
    """The environment of a bridge process started by a test: the test's database, fakes and
    secrets, as an operator would set them."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bridge.settings",
        "SECRET_KEY": "worker-test-secret",
        "ALLOWED_HOSTS": "localhost,127.0.0.1",
        "DATABASE_URL": database_url(),
        "BRIDGE_API_KEY": API_KEY,
        "LIVECHAT_API_BASE_URL": settings.LIVECHAT_API_BASE_URL,
        "LIVECHAT_ACCOUNTS_BASE_URL": settings.LIVECHAT_ACCOUNTS_BASE_URL,
        "LIVECHAT_CLIENT_ID": settings.LIVECHAT_CLIENT_ID,
        "LIVECHAT_CLIENT_SECRET": settings.LIVECHAT_CLIENT_SECRET,
        "LIVECHAT_ORGANIZATION_ID": settings.LIVECHAT_ORGANIZATION_ID,
        "LIVECHAT_REFRESH_TOKEN": settings.LIVECHAT_REFRESH_TOKEN,
        "LIVECHAT_WEBHOOK_SECRET": settings.LIVECHAT_WEBHOOK_SECRET,
        "LINE_API_BASE_URL": settings.LINE_API_BASE_URL,
        "LINE_DATA_API_BASE_URL": settings.LINE_DATA_API_BASE_URL,
        "LINE_CHANNEL_SECRET": settings.LINE_CHANNEL_SECRET,
        "LINE_CHANNEL_ACCESS_TOKEN": settings.LINE_CHANNEL_ACCESS_TOKEN,
        "DELIVERY_POLL_INTERVAL": "0.02",
        "DELIVERY_BACKOFF_BASE": "0.05",
        "DELIVERY_BACKOFF_MAX": "0.5",
        **env,
    }


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test started, ended after it."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def worker_process(settings, processes) -> Callable[..., subprocess.Popen]:
    """Start `python manage.py deliver` as a real process, configured only by environment."""

    def start(**env: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "deliver"],
            cwd=ROOT,
            env=process_environment(settings, **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        processes.append(process)
        return process

    return start


@pytest.fixture
def web_process(settings, processes, tmp_path) -> Callable[..., str]:
    """Start the bridge under gunicorn with the Procfile's config; returns its base URL."""

    def start(**env: str) -> str:
        log = tmp_path / "gunicorn.log"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "gunicorn", "bridge.wsgi", "--config", "gunicorn.conf.py"]
        process = subprocess.Popen(
            [*command, "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=process_environment(settings, **env),
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),  # a file: a pipe nobody reads would block gunicorn once full
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:  # not listening yet, or busy starting
                return process.poll() is not None  # ended: let the assertion below say so

        wait_until(answers, 30)
        assert process.poll() is None, f"gunicorn did not start:\n{log.read_text()[-3000:]}"
        return url

    return start
