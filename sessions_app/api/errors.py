"""Every JSON API error is `{"type": "bad", "message": ...}`, as the earlier bridge answered; what
is the bridge's own doing is `{"type": "fail", ...}`: 503 with Retry-After when the database is
unavailable, 500 otherwise."""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)

# Seconds a caller is asked to wait when the database is unavailable: a Postgres restart or
# failover, no pooled connection within the pool's 5 s, or SQLite's write lock held past its
# timeout, each over within seconds or minutes. A 500 would say the request itself was at fault;
# it was not, what it wrote was rolled back, and a retried /init finds a chat it had started
# (relay.chats.start_chat): the caller should send it again.
DATABASE_RETRY_AFTER_SECONDS = 5


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request too large"


class UnknownLineId(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "bad request"


def bad(message: str, status_code: int) -> Response:
    return Response({"type": "bad", "message": message}, status=status_code)


def liveagent_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response = bad("unauthorized", status.HTTP_401_UNAUTHORIZED)
        response["WWW-Authenticate"] = "Bearer"
        return response
    if isinstance(exc, exceptions.Throttled):
        response = bad("too many requests", status.HTTP_429_TOO_MANY_REQUESTS)
        if exc.wait:
            response["Retry-After"] = str(int(exc.wait) + 1)
        return response
    if isinstance(exc, exceptions.MethodNotAllowed):
        return bad("method not allowed", status.HTTP_405_METHOD_NOT_ALLOWED)
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return bad("bad request", status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)
    if isinstance(exc, PayloadTooLarge):
        return bad("request too large", exc.status_code)
    if isinstance(exc, exceptions.APIException) and exc.status_code < 500:
        # Validation and parse errors: the contract's answer, whatever the detail.
        return bad("bad request", status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, OperationalError | InterfaceError):
        logger.error("JSON API: database unavailable: %s", exc, exc_info=exc)
        response = Response(
            {"type": "fail", "message": "database unavailable; retry"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
    logger.exception("JSON API error", exc_info=exc)
    return Response(
        {"type": "fail", "message": "internal error"}, status=status.HTTP_500_INTERNAL_SERVER_ERROR
    )
