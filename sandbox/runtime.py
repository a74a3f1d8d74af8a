"""The stand-ins of one sandbox run, shared by the page's views (one process, one run)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

# The one LINE user the page plays; a valid-looking id, as LINE's are "U" + 32 hex digits.
USER_ID = "U5a4db0c5e1f84c2b9d3e7a6f0b1c2d3e"


@dataclass
class Sandbox:
    line: Any
    livechat: Any
    bridge_url: str
    # What the LINE user's screen shows, in the order it happened: their own messages as sent,
    # and what LINE delivered to them as it arrived.
    transcript: list[dict[str, Any]] = field(default_factory=list)
    seen_deliveries: int = 0
    faults: dict[str, str] = field(default_factory=lambda: {"line": "ok", "livechat": "ok"})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def user_transcript(self) -> list[dict[str, Any]]:
        """The screen, each of the user's messages with `read` when LINE shows it as read: it,
        or one the user sent after it, was marked read."""
        with self.lock:
            received = list(self.line.received.get(USER_ID, []))
            for message in received[self.seen_deliveries :]:
                self.transcript.append({"from": "bridge", "at": time.time(), **message})
            self.seen_deliveries = len(received)
            marked = {
                call.body["markAsReadToken"]
                for call in self.line.calls_to("/v2/bot/chat/markAsRead")
                if call.status == 200
            }
            read_up_to = max(
                (i for i, m in enumerate(self.transcript) if m.get("read_token") in marked),
                default=-1,
            )
            return [
                {
                    **{k: v for k, v in m.items() if k != "read_token"},
                    "read": m["from"] == "user" and i <= read_up_to,
                }
                for i, m in enumerate(self.transcript)
            ]

    def user_sent(self, message: dict[str, Any], *, read_token: str = "") -> None:
        with self.lock:
            self.transcript.append(
                {"from": "user", "at": time.time(), "read_token": read_token, **message}
            )


current: Sandbox | None = None
