"""The fake LINE and LiveChat servers of tests/fakes, run in a child process of their own so that
their Python work (and GIL) is not shared with the load generator; the benchmark asks them what
they saw through a pipe."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# LiveChat calls that carry a user's text into a chat.
CARRIERS = ("send_event", "start_chat", "resume_chat")


class Recorder:
    """Incremental indexes over the fakes' call lists: text -> when it first arrived."""

    def __init__(self, line: Any, livechat: Any) -> None:
        self.line = line
        self.livechat = livechat
        self.lc_cursor = 0
        self.line_cursor = 0
        self.lc_text_at: dict[str, float] = {}
        self.line_text_at: dict[str, float] = {}
        self.agent_sent: dict[str, tuple[float, float, str]] = {}
        self.lock = threading.Lock()

    def refresh(self) -> None:
        with self.livechat._lock:
            calls = self.livechat.calls[self.lc_cursor :]
            self.lc_cursor += len(calls)
        for call in calls:
            if call.name not in CARRIERS or not isinstance(call.body, dict):
                continue
            if call.name == "send_event":
                events = [call.body.get("event")]
            else:
                chat = call.body.get("chat") or {}
                events = (chat.get("thread") or {}).get("events") or []
            for event in events:
                if isinstance(event, dict) and isinstance(event.get("text"), str):
                    self.lc_text_at.setdefault(event["text"], call.at)
        with self.line._lock:
            calls = self.line.calls[self.line_cursor :]
            self.line_cursor += len(calls)
        for call in calls:
            if call.path != "/v2/bot/message/push" or not isinstance(call.body, dict):
                continue
            for message in call.body.get("messages") or []:
                if isinstance(message, dict) and isinstance(message.get("text"), str):
                    self.line_text_at.setdefault(message["text"], call.at)

    def counts(self, lc_from: int, line_from: int) -> dict[str, Any]:
        with self.livechat._lock:
            lc_calls = list(self.livechat.calls[lc_from:])
        with self.line._lock:
            line_calls = list(self.line.calls[line_from:])
        return {
            "livechat": dict(Counter(c.name for c in lc_calls)),
            "line": dict(Counter(f"{c.method} {_path_kind(c.path)}" for c in line_calls)),
            "livechat_not_ok": sum(1 for c in lc_calls if c.status and c.status >= 300),
            "line_not_ok": sum(1 for c in line_calls if c.status and c.status >= 300),
        }


def _path_kind(path: str) -> str:
    if path.startswith("/v2/bot/profile/"):
        return "/v2/bot/profile/{userId}"
    return path


def _chat_ids(livechat: Any) -> dict[str, str]:
    """line_id -> chat_id, from the session fields the bridge gave each customer."""
    out: dict[str, str] = {}
    with livechat._lock:
        for chat in livechat.chats.values():
            customer = livechat.customers.get(chat["customer_id"]) or {}
            for field in customer.get("session_fields") or []:
                if isinstance(field, dict) and "line_id" in field:
                    out[field["line_id"]] = chat["id"]
    return out


def serve(conn: Connection) -> None:
    """The child's main loop: start both fakes, then answer commands until told to stop."""
    # Ctrl-C reaches the whole process group: the benchmark, not this child, decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path.insert(0, str(ROOT))
    from tests.fakes import line as line_module
    from tests.fakes import livechat as livechat_module
    from tests.fakes.line import FakeLine
    from tests.fakes.livechat import FakeLiveChat

    # The fakes write an answer's headers and its body in two send()s. With Nagle's algorithm on
    # (socketserver's default), the body waits for the client's delayed ACK of the headers: ~40 ms
    # on every keep-alive answer. Real vendors answer at once; so do the fakes, here.
    line_module._Handler.disable_nagle_algorithm = True
    livechat_module._Handler.disable_nagle_algorithm = True

    line = FakeLine().start()
    livechat = FakeLiveChat().start()
    recorder = Recorder(line, livechat)
    pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="agent")
    conn.send(
        {
            "line_url": line.base_url,
            "line_data_url": line.data_base_url,
            "line_secret": line.channel_secret,
            "line_token": line.channel_access_token,
            "livechat_url": livechat.base_url,
            "client_id": livechat.client_id,
            "client_secret": livechat.client_secret,
            "organization_id": livechat.organization_id,
            "refresh_token": livechat.valid_refresh_token,
            "webhook_secret": livechat.webhook_secret,
        }
    )

    def agent_say(chat_id: str, text: str) -> None:
        start = time.time()
        try:
            livechat.agent_says(chat_id, text)
            outcome = "ok"
        except Exception as exc:
            outcome = repr(exc)
        with recorder.lock:
            recorder.agent_sent[text] = (start, time.time(), outcome)

    try:
        while True:
            try:
                command, *args = conn.recv()
            except EOFError:
                return
            if command == "stop":
                conn.send(None)
                return
            if command == "configure":
                livechat.webhook_url, profiles = args
                with line._lock:
                    line.profiles.update(profiles)
                conn.send(None)
            elif command == "marks":
                with livechat._lock, line._lock:
                    conn.send((len(livechat.calls), len(line.calls)))
            elif command == "counts":
                conn.send(recorder.counts(*args))
            elif command == "lc_count":
                recorder.refresh()
                conn.send(sum(1 for t in recorder.lc_text_at if t.startswith(tuple(args[0]))))
            elif command == "lc_times":
                recorder.refresh()
                prefixes = tuple(args[0])
                conn.send(
                    {t: at for t, at in recorder.lc_text_at.items() if t.startswith(prefixes)}
                )
            elif command == "line_count":
                recorder.refresh()
                conn.send(sum(1 for t in recorder.line_text_at if t.startswith(tuple(args[0]))))
            elif command == "line_times":
                recorder.refresh()
                prefixes = tuple(args[0])
                conn.send(
                    {t: at for t, at in recorder.line_text_at.items() if t.startswith(prefixes)}
                )
            elif command == "chat_ids":
                conn.send(_chat_ids(livechat))
            elif command == "agent_say":
                pool.submit(agent_say, *args)
                conn.send(None)
            elif command == "agent_sent":
                prefixes = tuple(args[0])
                with recorder.lock:
                    conn.send(
                        {t: v for t, v in recorder.agent_sent.items() if t.startswith(prefixes)}
                    )
            elif command == "errors":
                conn.send(list(livechat.errors))
            else:
                conn.send(ValueError(f"unknown command {command!r}"))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        line.stop()
        livechat.stop()
