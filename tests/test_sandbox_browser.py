"""The sandbox, as a newcomer uses it: a real browser plays the LINE user and the agent."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (.ci/run installs it)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def sandbox_process(tmp_path):
    port, bridge_port = free_port(), free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bridge.settings", "DEBUG": "true"}
    for name in list(env):
        if name.startswith(("LINE_", "LIVECHAT_", "BRIDGE_SANDBOX", "SANDBOX_", "DATABASE_URL")):
            del env[name]
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "sandbox",
            "--port",
            str(port),
            "--bridge-port",
            str(bridge_port),
            "--database",
            str(tmp_path / "sandbox.sqlite3"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/sandbox/"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the sandbox did not start:\n{process.stdout.read()}")
            time.sleep(0.3)
    yield url, process
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def sandbox(sandbox_process):
    return sandbox_process[0]


def test_the_sandbox_says_nothing_is_missing(sandbox_process):
    # Its bridge has every vendor setting (the stand-ins'), whatever the shell running it has.
    _, process = sandbox_process
    process.terminate()
    output, _ = process.communicate(timeout=15)
    assert "No real LINE or LiveChat account" in output
    assert "not configured" not in output, output


def test_round_trip_in_the_browser(sandbox, capsys):
    from playwright.sync_api import expect, sync_playwright

    screenshot = Path(tempfile.gettempdir()) / "bridge-sandbox-round-trip.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(sandbox)

            page.fill("#user-text", "Hello, I need help with my order")
            page.click("#user-send")
            expect(page.locator("#agent-log")).to_contain_text(
                "Hello, I need help with my order", timeout=20_000
            )
            # The agent has seen it: the user's message shows as read in LINE.
            expect(page.locator("#user-log .mine[data-read]")).to_have_count(0)
            page.click("#agent-seen")
            expect(page.locator("#user-log .mine[data-read]")).to_have_count(1, timeout=20_000)
            page.fill("#agent-text", "Hi! I'm looking into it now.")
            page.click("#agent-send")
            expect(page.locator("#user-log")).to_contain_text(
                "Hi! I'm looking into it now.", timeout=20_000
            )
            # The agent offers choices: LINE shows them as quick replies, and a tap answers.
            page.click("#agent-choices")
            choice = page.locator("#quick-replies button", has_text="Yes, thanks")
            choice.click(timeout=20_000)
            customer_said = page.locator("#agent-log .theirs").last
            expect(customer_said).to_have_text("Yes, thanks", timeout=20_000)
            expect(page.locator("#quick-replies button")).to_have_count(0)

            # LINE fails: the agent's next answers wait in the outbox, then arrive once, in order.
            page.click('[data-fault="line"][data-kind="500"]')
            for text in ("First answer while LINE is down", "Second answer"):
                page.fill("#agent-text", text)
                page.click("#agent-send")
            expect(page.locator("#deliveries")).to_contain_text("pending", timeout=20_000)
            page.click('[data-fault="line"][data-kind="ok"]')
            expect(page.locator("#user-log")).to_contain_text("Second answer", timeout=30_000)
            log = page.locator("#user-log").inner_text()
            assert log.count("First answer while LINE is down") == 1
            assert log.index("First answer while LINE is down") < log.index("Second answer")

            page.click("#agent-end")
            expect(page.locator("#user-log")).to_contain_text("The chat has ended.", timeout=20_000)
            expect(page.locator("#deliveries")).to_contain_text("sent")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    with capsys.disabled():
        print(f"\nsandbox screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
