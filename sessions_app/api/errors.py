"""Every JSON API error is `{"type": "bad", "message": ...}`, as the earlier bridge answered."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


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
    logger.exception("JSON API error", exc_info=exc)
    return Response(
        {"type": "fail", "message": "internal error"}, status=status.HTTP_500_INTERNAL_SERVER_ERROR
    )
