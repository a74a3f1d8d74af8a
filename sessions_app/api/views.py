"""The four endpoints of the earlier bridge, same keys and `{"type", "message"}` answers."""

from __future__ import annotations

import re
import socket
import time
from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app import relay, thread_budget
from sessions_app.db_pool import release_connection
from sessions_app.models import ChatSession, Message
from sessions_app.notices import notice_text

from .errors import PayloadTooLarge, UnknownLineId, bad
from .serializers import (
    InitSerializer,
    LineIdSerializer,
    MessagesSerializer,
    SendSerializer,
)

MAX_BODY_BYTES = 64 * 1024


class LiveagentView(APIView):
    serializer_class: type[serializers.Serializer] = LineIdSerializer

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            raise PayloadTooLarge()

    def validated(self, request: Request) -> serializers.Serializer:
        if not isinstance(request.data, dict):
            raise serializers.ValidationError("a JSON object is required")
        serializer = self.serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer

    def session(self, line_id: str) -> ChatSession:
        session = ChatSession.objects.filter(line_id=line_id).first()
        if session is None:
            raise UnknownLineId()
        return session


def answer(kind: str, message: str, status: int = 200) -> Response:
    return Response({"type": kind, "message": message}, status=status)


class InitView(LiveagentView):
    serializer_class = InitSerializer

    def post(self, request: Request) -> Response:
        serializer = self.validated(request)
        data = serializer.validated_data
        opened = relay.user_open_chat(
            line_id=data["line_id"],
            display_name=data["display_name"],
            session_fields=serializer.session_fields(),
            delivery_mode=data["delivery"],
        )
        if opened:
            return answer("ok", notice_text("connected", "ja"))
        return answer("fail", notice_text("unavailable", "ja"))


class SendView(LiveagentView):
    serializer_class = SendSerializer

    def post(self, request: Request) -> Response:
        data = self.validated(request).validated_data
        key = idempotency_key(request)
        session = self.session(data["line_id"])
        if key is None:
            relay.user_said(session=session, text=data["message"])
            return answer("send", "send")
        try:
            queued = relay.user_said_once(session=session, text=data["message"], key=key)
        except relay.IdempotencyKeyReused:
            return bad("Idempotency-Key already used for another message", 422)
        response = answer("send", "send")
        if not queued:
            response["Idempotent-Replayed"] = "true"
        return response


_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def idempotency_key(request: Request) -> str | None:
    """The request's `Idempotency-Key` (IETF httpapi draft): a quoted string there, bare as most
    clients send it; visible ASCII only, since it is shown to operators in the admin."""
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not (0 < len(value) <= relay.IDEMPOTENCY_KEY_MAX_LENGTH and _VISIBLE_ASCII.fullmatch(value)):
        raise serializers.ValidationError("malformed Idempotency-Key")
    return value


class CloseView(LiveagentView):
    def post(self, request: Request) -> Response:
        data = self.validated(request).validated_data
        relay.user_closed(session=self.session(data["line_id"]))
        return answer("end", "deleted session")


# What /messages answers for each kind of queued item.
PULL_TYPES = {Message.Kind.END: "end", Message.Kind.NOTICE: "ok"}


class MessagesView(LiveagentView):
    serializer_class = MessagesSerializer

    def post(self, request: Request) -> Response:
        data = self.validated(request).validated_data
        session = self.session(data["line_id"])
        wait = data.get("wait", settings.MESSAGES_MAX_WAIT)
        deadline = time.monotonic() + wait
        with thread_budget.budget.waiting_poll() as should_give_way:
            while True:
                if client_gone(request):
                    # It gave up waiting: what is handed out now would be lost with this answer.
                    return answer("ok", "")
                item = relay.pull_next(session=session)
                if item is not None:
                    return answer(PULL_TYPES.get(item.kind, "message"), item.body)
                # "Nothing yet" early, when every thread of the process is taken: a LINE webhook
                # may be queued behind this poll (thread_budget.py).
                if time.monotonic() >= deadline or should_give_way():
                    return answer("ok", "")
                release_connection()  # waiting pull clients would hold every connection
                time.sleep(
                    min(settings.MESSAGES_POLL_INTERVAL, max(deadline - time.monotonic(), 0))
                )


def client_gone(request: Request) -> bool:
    """Has the client closed its connection? Known under gunicorn, whose socket the request
    carries (a client that times out closes it); elsewhere, never."""
    connection = request.META.get("gunicorn.socket")
    if connection is None:
        return False
    try:
        # Nothing to read yet raises; b"" is the client's end of the connection.
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError, ValueError):  # ValueError: a TLS socket
        return False
    except OSError:  # reset by the client
        return True
