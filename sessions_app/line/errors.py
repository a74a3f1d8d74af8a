"""LINE's failures, reduced to what the delivery worker decides on."""

from __future__ import annotations

from sessions_app.errors import DeliveryError


class LineError(DeliveryError):
    def __init__(self, message: str, *, status: int | None = None, request_id: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" (x-line-request-id {self.request_id})" if self.request_id else ""
        status = f"HTTP {self.status} " if self.status else ""
        return f"LINE {status}{self.args[0]}{where}"


class NotConfigured(LineError):
    retryable = True  # messages wait for an operator to add the credentials


class RetryableError(LineError):
    retryable = True


class OutcomeUnknown(RetryableError):
    uncertain = True


class PermanentError(LineError):
    pass


class NotFound(PermanentError):
    pass


class ContentNotReady(RetryableError):
    """202: LINE is still preparing a video or audio; ask again later."""


class ContentGone(NotFound):
    """404 or 410: the content expired on LINE or the user unsent the message."""


class ContentTooLarge(PermanentError):
    """The content is larger than the caller can take: `size` bytes when `exact` (LINE said so in
    Content-Length), else more than `size` (found while reading)."""

    def __init__(self, message: str, *, size: int, exact: bool, content_type: str = "") -> None:
        super().__init__(message)
        self.size = size
        self.exact = exact
        self.content_type = content_type
