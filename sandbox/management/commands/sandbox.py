"""`python manage.py sandbox`: the whole bridge on one machine, against stand-in vendors.

Starts the fake LINE and LiveChat servers (the ones the tests use) on loopback, the real bridge
under gunicorn and its real delivery worker, wired together only through the ordinary settings
(`*_BASE_URL`, secrets), and serves a page where one plays the LINE user and the agent."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

MARKER = "BRIDGE_SANDBOX"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:`port` (as the page's server binds it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def sandbox_environment(
    *, database: Path, line_port: int, line_data_port: int, livechat_port: int
) -> dict[str, str]:
    """The settings an operator would set, pointing at the stand-ins instead of the vendors."""
    line_url = f"http://127.0.0.1:{line_port}"
    livechat_url = f"http://127.0.0.1:{livechat_port}"
    return {
        MARKER: "1",
        "SANDBOX_UI": "1",
        "SANDBOX_LINE_PORT": str(line_port),
        "SANDBOX_LINE_DATA_PORT": str(line_data_port),
        "SANDBOX_LIVECHAT_PORT": str(livechat_port),
        "DEBUG": "true",
        "SECRET_KEY": secrets.token_urlsafe(40),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": f"sqlite:///{database}",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        "BRIDGE_API_KEY": "sandbox-api-key",
        "LINE_CHANNEL_SECRET": "sandbox-line-channel-secret",
        "LINE_CHANNEL_ACCESS_TOKEN": "sandbox-line-access-token",
        "LINE_API_BASE_URL": line_url,
        "LINE_DATA_API_BASE_URL": f"http://127.0.0.1:{line_data_port}",
        "LIVECHAT_CLIENT_ID": "sandbox-client-id",
        "LIVECHAT_CLIENT_SECRET": "sandbox-client-secret",
        "LIVECHAT_ORGANIZATION_ID": "sandbox-organization",
        "LIVECHAT_REFRESH_TOKEN": "dal:sandbox-refresh-token",
        "LIVECHAT_WEBHOOK_SECRET": "sandbox-webhook-secret",
        "LIVECHAT_API_BASE_URL": livechat_url,
        "LIVECHAT_ACCOUNTS_BASE_URL": livechat_url,
        # A stand-in answers at once: retry quickly so that recovering from a fault shows.
        "DELIVERY_BACKOFF_BASE": "0.5",
        "DELIVERY_BACKOFF_MAX": "5",
        "VENDOR_READ_TIMEOUT": "5",
    }


class Command(BaseCommand):
    help = "Run the bridge against stand-in LINE and LiveChat servers, with a page to chat in."
    # The checks would judge this process's settings, which are not the sandbox bridge's (that one
    # has every vendor setting, pointing at the stand-ins): they would warn of what is not missing.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=8000, help="the page's port")
        parser.add_argument("--bridge-port", type=int, default=8001, help="the bridge's port")
        parser.add_argument(
            "--database",
            default=None,
            help="the SQLite file to use (default sandbox.sqlite3; emptied first)",
        )

    def handle(
        self, *args: Any, port: int, bridge_port: int, database: str | None, **options: Any
    ) -> None:
        if os.environ.get(MARKER) != "1":
            # Before anything starts: the page's port taken was found only after the address
            # to open had been printed (perhaps another server's), with a traceback.
            for name, number in (("--port", port), ("--bridge-port", bridge_port)):
                if port_in_use(number):
                    raise CommandError(
                        f"port {number} is in use on 127.0.0.1 (another server?): choose a free "
                        f"one with {name}, e.g. bin/sandbox --port 8010 --bridge-port 8011"
                    )
            path = Path(database) if database else Path(settings.BASE_DIR) / "sandbox.sqlite3"
            self._restart_in_sandbox(port, bridge_port, path.resolve())
        self._run(port, bridge_port)

    def _restart_in_sandbox(self, port: int, bridge_port: int, database: Path) -> None:
        """Start again with the sandbox's settings, so that this process (which serves the page
        and reads the bridge's record) sees exactly what the bridge processes see."""
        configured = [
            name for name in ("LINE_CHANNEL_SECRET", "LIVECHAT_CLIENT_ID") if os.environ.get(name)
        ]
        if configured:
            self.stdout.write(f"Ignoring {', '.join(configured)}: the sandbox uses stand-ins.")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)  # the stand-ins start empty too
        env = {
            **os.environ,
            **sandbox_environment(
                database=database,
                line_port=free_port(),
                line_data_port=free_port(),
                livechat_port=free_port(),
            ),
        }
        argv = [
            sys.executable,
            "manage.py",
            "sandbox",
            "--port",
            str(port),
            "--bridge-port",
            str(bridge_port),
        ]
        os.chdir(settings.BASE_DIR)
        os.execve(sys.executable, argv, env)  # noqa: S606 - our own interpreter and manage.py

    def _run(self, port: int, bridge_port: int) -> None:
        from sandbox import runtime
        from tests.fakes.line import FakeLine
        from tests.fakes.livechat import FakeLiveChat

        env = os.environ
        line = FakeLine(
            channel_access_token=env["LINE_CHANNEL_ACCESS_TOKEN"],
            channel_secret=env["LINE_CHANNEL_SECRET"],
        ).start(port=int(env["SANDBOX_LINE_PORT"]), data_port=int(env["SANDBOX_LINE_DATA_PORT"]))
        livechat = FakeLiveChat(
            client_id=env["LIVECHAT_CLIENT_ID"],
            client_secret=env["LIVECHAT_CLIENT_SECRET"],
            organization_id=env["LIVECHAT_ORGANIZATION_ID"],
            refresh_token=env["LIVECHAT_REFRESH_TOKEN"],
            webhook_secret=env["LIVECHAT_WEBHOOK_SECRET"],
        ).start(port=int(env["SANDBOX_LIVECHAT_PORT"]))
        line.profiles[runtime.USER_ID] = {
            "displayName": "Sandbox User",
            "userId": runtime.USER_ID,
            "language": "en",
        }
        bridge_url = f"http://127.0.0.1:{bridge_port}"
        line.webhook_url = f"{bridge_url}/line/webhook"
        livechat.webhook_url = f"{bridge_url}/livechat/webhook"

        call_command("migrate", verbosity=0, interactive=False)
        child_env = {k: v for k, v in env.items() if k != "SANDBOX_UI"}
        children = [
            subprocess.Popen(  # noqa: S603 - fixed argv: our interpreter, gunicorn, manage.py
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "bridge.wsgi",
                    "--config",
                    "gunicorn.conf.py",
                    "--bind",
                    f"127.0.0.1:{bridge_port}",
                    "--workers",
                    "1",
                ],
                env=child_env,
            ),
            subprocess.Popen([sys.executable, "manage.py", "deliver"], env=child_env),
        ]

        def stop(*_: Any) -> None:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
            line.stop()
            livechat.stop()
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        try:
            self._wait_for(f"{bridge_url}/healthz", children)
            runtime.current = runtime.Sandbox(line=line, livechat=livechat, bridge_url=bridge_url)
            self.stdout.write(
                "No real LINE or LiveChat account is used: the bridge runs against stand-ins on "
                "127.0.0.1 (bin/run with LINE_* and LIVECHAT_* set connects the real ones).\n"
                f"Bridge:  {bridge_url}  (worker running)\n"
                f"Open the sandbox page: http://127.0.0.1:{port}/sandbox/",
            )
            self.stdout.flush()
            from django.core.servers.basehttp import run
            from django.core.wsgi import get_wsgi_application

            run("127.0.0.1", port, get_wsgi_application(), threading=True)
        except KeyboardInterrupt:
            pass
        finally:
            try:
                stop()
            except SystemExit:
                pass

    def _wait_for(self, url: str, children: list[subprocess.Popen]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(child.poll() is not None for child in children):
                raise CommandError("the bridge or its worker exited; see the messages above")
            try:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
                    return
            except OSError:
                time.sleep(0.2)
        raise CommandError(f"the bridge did not answer at {url}")
