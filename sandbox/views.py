"""The sandbox page: a LINE user's chat, an agent's console and the bridge's own record.

Every action goes through the bridge's real paths: the user's messages are signed LINE webhooks
posted to the bridge, the agent's are LiveChat webhooks; what each side then sees is only what
the bridge delivered to the stand-ins."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from sessions_app.models import ChatSession, Message
from tests.fakes.line import text_event

from . import runtime

# A 1x1 PNG, so that an image the user sends has real content to download.
SAMPLE_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e221bc330000000049454e44ae426082"
)
FAULTS = {
    "500": {"status": 500},
    "503": {"status": 503},
    "429": {"status": 429},
}


def _sandbox() -> runtime.Sandbox:
    if runtime.current is None:
        raise RuntimeError("the sandbox is not running: start it with `manage.py sandbox`")
    return runtime.current


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    sandbox = _sandbox()
    return render(
        request,
        "sandbox/index.html",
        {"bridge_url": sandbox.bridge_url, "user_id": runtime.USER_ID},
    )


@require_GET
def state(request: HttpRequest) -> JsonResponse:
    sandbox = _sandbox()
    chats = []
    for chat in list(sandbox.livechat.chats.values()):
        customer = sandbox.livechat.customers.get(chat.get("customer_id"), {})
        events = [
            {**event, "thread_id": thread["id"]}
            for thread in chat["threads"]
            for event in thread["events"]
        ]
        chats.append(
            {
                "id": chat["id"],
                "active": bool(chat["threads"] and chat["threads"][-1]["active"]),
                "customer": customer.get("name") or chat.get("customer_id"),
                "customer_id": chat.get("customer_id"),
                "events": events,
            }
        )
    sessions = [
        {
            "line_id": s.line_id,
            "state": s.state,
            "chat_id": s.chat_id,
            "display_name": s.display_name,
            "agent": s.agent_name,
        }
        for s in ChatSession.objects.order_by("pk")
    ]
    messages = [
        {
            "id": m.pk,
            "direction": m.direction,
            "route": m.route,
            "kind": m.kind,
            "body": m.body[:200],
            "status": m.status,
            "attempts": m.attempts,
            "error": m.last_error[:200],
        }
        for m in Message.objects.order_by("-pk")[:40]
    ]
    return JsonResponse(
        {
            "user": sandbox.user_transcript(),
            "chats": chats,
            "sessions": sessions,
            "messages": messages,
            "faults": sandbox.faults,
        }
    )


@require_POST
def user_says(request: HttpRequest) -> JsonResponse:
    """The LINE user sends something: LINE signs a webhook and posts it to the bridge."""
    sandbox = _sandbox()
    data = _body(request)
    kind = data.get("kind", "text")
    if kind == "text":
        text = str(data.get("text", "")).strip()
        if not text:
            return JsonResponse({"error": "empty message"}, status=400)
        event = text_event(runtime.USER_ID, text)
        shown = {"type": "text", "text": text}
    elif kind == "sticker":
        event = text_event(
            runtime.USER_ID,
            "",
            message={
                "type": "sticker",
                "text": None,
                "packageId": "446",
                "stickerId": "1988",
                "stickerResourceType": "STATIC",
                "keywords": ["hello", "wave"],
            },
        )
        shown = {"type": "sticker", "text": "(sticker: hello)"}
    elif kind == "location":
        event = text_event(
            runtime.USER_ID,
            "",
            message={
                "type": "location",
                "text": None,
                "title": "Tokyo Tower",
                "address": "4-2-8 Shibakoen, Minato-ku, Tokyo",
                "latitude": 35.65858,
                "longitude": 139.745433,
            },
        )
        shown = {"type": "location", "text": "(location: Tokyo Tower)"}
    elif kind == "image":
        message_id = str(uuid.uuid4().int)[:18]
        sandbox.line.contents[message_id] = (SAMPLE_PNG, "image/png")
        event = text_event(
            runtime.USER_ID,
            "",
            message={
                "type": "image",
                "id": message_id,
                "text": None,
                "contentProvider": {"type": "line"},
            },
        )
        shown = {"type": "image", "text": "(image)"}
    else:
        return JsonResponse({"error": f"unknown kind {kind!r}"}, status=400)
    sandbox.user_sent(shown, read_token=event["message"].get("markAsReadToken", ""))
    status, answer = sandbox.line.post_events([event])
    return JsonResponse({"bridge_status": status, "bridge_answer": answer.decode(errors="replace")})


@require_POST
def agent_acts(request: HttpRequest) -> JsonResponse:
    """The agent answers, offers choices, sends an image, joins, sees or ends the chat, in the
    LiveChat stand-in, which posts the matching webhook to the bridge."""
    sandbox = _sandbox()
    data = _body(request)
    chat_id = str(data.get("chat_id", ""))
    action = data.get("action")
    if chat_id not in sandbox.livechat.chats:
        return JsonResponse({"error": "no such chat"}, status=400)
    try:
        if action == "say":
            text = str(data.get("text", "")).strip()
            if not text:
                return JsonResponse({"error": "empty message"}, status=400)
            envelope = sandbox.livechat.agent_says(chat_id, text)
        elif action == "image":
            envelope = sandbox.livechat.agent_sends_file(
                chat_id,
                url="https://cdn.livechat-files.com/api/file/lc/att/sandbox/welcome.png",
                name="welcome.png",
                content_type="image/png",
                size=len(SAMPLE_PNG),
            )
        elif action == "choices":
            envelope = sandbox.livechat.agent_sends_rich_message(
                chat_id,
                [
                    {
                        "title": "Did that answer your question?",
                        "buttons": [
                            {"text": text, "type": "message", "value": text, "user_ids": []}
                            for text in ("Yes, thanks", "No, I have another question")
                        ],
                    }
                ],
                template_id="quick_replies",
            )
        elif action == "join":
            envelope = sandbox.livechat.agent_joins(chat_id)
        elif action == "seen":
            envelope = sandbox.livechat.agent_sees(chat_id)
        elif action == "end":
            envelope = sandbox.livechat.agent_ends_chat(chat_id)
        else:
            return JsonResponse({"error": f"unknown action {action!r}"}, status=400)
    except RuntimeError as exc:  # e.g. writing to a chat that has ended
        return JsonResponse({"error": str(exc)}, status=409)
    return JsonResponse({"posted": envelope.get("action")})


@require_POST
def fault(request: HttpRequest) -> JsonResponse:
    """Make LINE or LiveChat fail (until recovered) or answer slowly."""
    sandbox = _sandbox()
    data = _body(request)
    vendor, kind = data.get("vendor"), str(data.get("kind", ""))
    fake = {"line": sandbox.line, "livechat": sandbox.livechat}.get(vendor)
    if fake is None:
        return JsonResponse({"error": "vendor is line or livechat"}, status=400)
    fake.clear_faults()
    forever = 1_000_000
    if kind == "ok":
        pass
    elif kind == "slow":
        # Slower than the bridge's read timeout: every answer is lost, as in a real timeout.
        fake.slow("/v2/bot/message" if vendor == "line" else "*", 12.0, times=forever)
    elif kind in FAULTS:
        status = FAULTS[kind]["status"]
        if vendor == "line":
            fake.fail("/v2/bot/message", status=status, times=forever)
        else:
            fake.fail("*", status=status, times=forever)
    else:
        return JsonResponse({"error": f"unknown fault {kind!r}"}, status=400)
    sandbox.faults[vendor] = kind
    return JsonResponse({"faults": sandbox.faults})
