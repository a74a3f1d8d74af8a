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
