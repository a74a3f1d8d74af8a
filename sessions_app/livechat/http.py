"""One place where the bridge's requests to LiveChat go out: timeouts, JSON, error mapping."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import requests
from django.conf import settings

from ..db_pool import release_connection
from .errors import (
    AuthenticationError,
    LiveChatError,
    MisdirectedRequest,
    OutcomeUnknown,
    RetryableError,
    error_from_response,
)

logger = logging.getLogger(__name__)
_local = threading.local()


def http_session() -> requests.Session:
    """A connection-pooling session per thread (requests.Session is not promised thread-safe)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = "line-livechat-bridge"
        _local.session = session
    return session


def post(
    url: str,
    *,
    json: Any = None,
    data: dict[str, str] | None = None,
    files: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POST and return the decoded JSON answer, or raise a LiveChatError."""
    release_connection()
    try:
        response = http_session().post(
            url,
            json=json,
            data=data,
            files=files,
            params=params,
            headers=headers,
            timeout=settings.VENDOR_TIMEOUT,
        )
    except requests.ConnectTimeout as exc:
        raise RetryableError(f"connect timeout: {exc}", error_type="timeout") from exc
    except requests.ReadTimeout as exc:
        raise OutcomeUnknown(f"read timeout: {exc}", error_type="timeout") from exc
    except requests.ConnectionError as exc:
        if _never_sent(exc):
            raise RetryableError(f"cannot connect: {exc}", error_type="connection") from exc
        raise OutcomeUnknown(f"connection lost: {exc}", error_type="connection") from exc
    except requests.RequestException as exc:
        raise RetryableError(str(exc), error_type="connection") from exc

    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {"raw": response.text[:500]}
    if response.status_code >= 400:
        error = error_from_response(response.status_code, body)
        logger.warning(
            "livechat call failed url=%s status=%s type=%s",
            url,
            response.status_code,
            error.error_type,
        )
        raise error
    if not isinstance(body, dict | list):
        raise LiveChatError("unexpected answer", status=response.status_code)
    return body


def call_action(
    api: str,
    method: str,
    *,
    headers_for: Callable[[bool], dict[str, str]],
    renewable: bool = True,
    **post_kwargs: Any,
) -> Any:
    """POST one Web API action (`api` is `customer` or `configuration`): a refused token is
    renewed once when `renewable`, a region redirect followed once. `headers_for(renew)` gives
    the Authorization and X-Region headers, from a fresh token when `renew`."""
    url = (
        f"{settings.LIVECHAT_API_BASE_URL.rstrip('/')}/v{settings.LIVECHAT_API_VERSION}"
        f"/{api}/action/{method}"
    )
    headers = headers_for(False)
    renewed = redirected = False
    while True:
        try:
            return post(url, headers=headers, **post_kwargs)
        except AuthenticationError:
            if renewed or not renewable:
                raise
            renewed = True
            headers = headers_for(True)
        except MisdirectedRequest as exc:
            if redirected or not exc.data.get("region"):
                raise
            redirected = True
            headers = {**headers, "X-Region": str(exc.data["region"])}


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection was refused or never opened, so LiveChat cannot have acted."""
    text = repr(exc)
    return any(
        marker in text
        for marker in ("NewConnectionError", "Connection refused", "NameResolutionError")
    )
