"""LiveChat's failures, reduced to what the bridge decides on: try again later, or give up."""

from __future__ import annotations

from typing import Any

from sessions_app.errors import DeliveryError


class LiveChatError(DeliveryError):
    """A call to LiveChat failed. `retryable` says whether the same call may succeed later."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        error_type: str = "",
        status: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status = status
        self.data = data or {}

    def __str__(self) -> str:
        parts = [self.error_type or "error"]
        if self.status:
            parts.append(f"HTTP {self.status}")
        return f"LiveChat {' '.join(parts)}: {self.args[0]}"


class NotConfigured(LiveChatError):
    """The bridge lacks the settings or credentials to call LiveChat at all."""

    retryable = True  # an operator may add them; messages wait rather than fail


class Disconnected(NotConfigured):
    """LiveChat refused the bridge's refresh token: it needs connecting again (README,
    "Connecting LiveChat"). Messages wait for that rather than fail."""


class AppRefused(NotConfigured):
    """The accounts service refused a token grant for another reason than the token: the app's
    id or secret. Messages wait for the settings to be corrected."""


class RetryableError(LiveChatError):
    """Outage, rate limit or timeout: the same call may succeed later."""

    retryable = True


class OutcomeUnknown(RetryableError):
    """The request may have reached LiveChat (read timeout, dropped connection)."""

    uncertain = True


class PermanentError(LiveChatError):
    """LiveChat refused the call for a reason a retry will not change."""


class AuthenticationError(PermanentError):
    """The token was refused; callers mint a new one once."""


class ChatInactive(PermanentError):
    """The chat has no active thread: resume it instead."""


class MisdirectedRequest(PermanentError):
    """The license lives in another region (`data.region`)."""


RETRYABLE_TYPES = frozenset(
    {"too_many_requests", "service_unavailable", "internal", "request_timeout"}
)


def error_from_response(status: int, body: Any) -> LiveChatError:
    """Map an error answer of the Web API or the accounts service to one of ours."""
    error_type, message, data = "", "", {}
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            error_type = str(error.get("type", ""))
            message = str(error.get("message", ""))
            data = error.get("data") if isinstance(error.get("data"), dict) else {}
        elif "oauth_exception" in body or isinstance(error, str):
            error_type = (
                "authentication" if status == 401 else str(body.get("oauth_exception") or error)
            )
            message = str(body.get("exception_description") or body.get("error_description", ""))
    message = message or f"HTTP {status}"
    kwargs = {"error_type": error_type, "status": status, "data": data}
    if error_type == "authentication" or status == 401:
        return AuthenticationError(message, **kwargs)
    if error_type == "chat_inactive":
        return ChatInactive(message, **kwargs)
    if error_type == "misdirected_request":
        return MisdirectedRequest(message, **kwargs)
    if error_type in RETRYABLE_TYPES or status == 429 or status >= 500:
        return RetryableError(message, **kwargs)
    return PermanentError(message, **kwargs)
