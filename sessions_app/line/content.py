"""What users send as image, video, audio and file messages, fetched from LINE's data API
(`GET /v2/bot/message/{id}/content`) through line-bot-sdk's MessagingApiBlob.

The SDK reads a whole answer into memory, even with `_preload_content=False` (it still fills
`raw_data`). A user can send a file of any size, so the content client here reads the body itself,
in chunks, and gives up as soon as it is larger than the caller can use or takes too long."""

from __future__ import annotations

import mimetypes
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import urllib3
from django.conf import settings
from linebot.v3.messaging import ApiClient, ApiException, Configuration, MessagingApiBlob

from ..db_pool import release_connection
from .client import raise_line_error, request_timeout
from .errors import (
    ContentGone,
    ContentNotReady,
    ContentTooLarge,
    LineError,
    NotConfigured,
    RetryableError,
)

CHUNK_BYTES = 64 * 1024

# mimetypes answers oddities for some of LINE's types (.jpe, none for audio/x-m4a).
EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "audio/x-m4a": "m4a",
    "audio/m4a": "m4a",
    "audio/mp4": "m4a",
    "audio/aac": "aac",
    "audio/mpeg": "mp3",
}
# When LINE says only application/octet-stream.
EXTENSION_BY_KIND = {"image": "jpg", "video": "mp4", "audio": "m4a"}


@dataclass(frozen=True)
class Content:
    data: bytes
    content_type: str


class _ReadBody:
    """A read answer, shaped as the SDK's RESTResponse so that ApiClient can go on with it."""

    def __init__(self, response: Any, data: bytes) -> None:
        self.urllib3_response = response
        self.status = response.status
        self.reason = response.reason
        self.data = data

    def getheaders(self) -> Any:
        return self.urllib3_response.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.urllib3_response.headers.get(name, default)


class _BoundedApiClient(ApiClient):
    """An ApiClient whose GET answers are read with a bound on size and on time."""

    def __init__(self, configuration: Configuration, *, max_bytes: int, max_seconds: float) -> None:
        super().__init__(configuration)
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    def request(
        self,
        method: str,
        url: str,
        query_params: Any = None,
        headers: Any = None,
        post_params: Any = None,
        body: Any = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        if method != "GET":
            return super().request(
                method,
                url,
                query_params=query_params,
                headers=headers,
                post_params=post_params,
                body=body,
                _preload_content=_preload_content,
                _request_timeout=_request_timeout,
            )
        # Error answers still come back as ApiException (their small JSON bodies are read whole).
        response = super().request(
            method,
            url,
            query_params=query_params,
            headers=headers,
            _preload_content=False,
            _request_timeout=_request_timeout,
        )
        return _ReadBody(response, self._read(response))

    def _read(self, response: Any) -> bytes:
        content_type = _media_type(response.headers.get("Content-Type"))
        declared = _int(response.headers.get("Content-Length"))
        if declared is not None and declared > self.max_bytes:
            _discard(response)
            raise ContentTooLarge(
                f"content is {declared} bytes", size=declared, exact=True, content_type=content_type
            )
        too_slow = f"download took over {self.max_seconds:g} s"
        watchdog = _Watchdog(response, self.max_seconds)
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in response.stream(CHUNK_BYTES):
                total += len(chunk)
                if total > self.max_bytes:
                    raise ContentTooLarge(
                        f"content is over {self.max_bytes} bytes",
                        size=self.max_bytes,
                        exact=False,
                        content_type=content_type,
                    )
                chunks.append(chunk)
        except BaseException as exc:
            cut_off = watchdog.stop()
            _discard(response)
            if cut_off and not isinstance(exc, ContentTooLarge):
                raise RetryableError(too_slow) from exc
            raise
        if watchdog.stop():
            # Cut off, a body without a Content-Length ends as if it were whole.
            _discard(response)
            raise RetryableError(too_slow)
        response.release_conn()
        return b"".join(chunks)


class _Watchdog:
    """Ends a download at its deadline from another thread, by shutting its socket for reading.

    Checking the clock between reads is not enough: stream(n) waits for n bytes, each wait as long
    as the read timeout, so a body that trickles in (a byte now and then) or stalls would be
    read for as long as it takes."""

    def __init__(self, response: Any, seconds: float) -> None:
        self._response = response
        self._lock = threading.Lock()
        self._stopped = False
        self._fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._fired = True
            try:
                self._response.shutdown()
            except (OSError, ValueError, RuntimeError):
                pass  # already closed, or a connection that cannot be shut

    def stop(self) -> bool:
        """Stop watching; True when the deadline had passed and the download was cut off."""
        self._timer.cancel()
        with self._lock:
            self._stopped = True
            return self._fired


def _discard(response: Any) -> None:
    # Closing, not draining: the rest of a too-large body is never read.
    response.close()
    response.release_conn()


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _media_type(value: Any) -> str:
    return str(value or "").split(";")[0].strip().lower()


@lru_cache(maxsize=8)
def _blob_api(host: str, access_token: str, max_bytes: int, max_seconds: float) -> MessagingApiBlob:
    configuration = Configuration(host=host, access_token=access_token)
    configuration.retries = False  # the delivery worker retries
    client = _BoundedApiClient(configuration, max_bytes=max_bytes, max_seconds=max_seconds)
    return MessagingApiBlob(client)


def fetch(message_id: str, *, max_bytes: int) -> Content:
    """The content of one message, at most `max_bytes` long.

    Raises ContentNotReady (202, try later), ContentGone (404/410), ContentTooLarge, or another
    LineError."""
    if not settings.LINE_CHANNEL_ACCESS_TOKEN:
        raise NotConfigured("LINE is not configured: set LINE_CHANNEL_ACCESS_TOKEN")
    api = _blob_api(
        settings.LINE_DATA_API_BASE_URL.rstrip("/"),
        settings.LINE_CHANNEL_ACCESS_TOKEN,
        max_bytes,
        float(settings.LINE_CONTENT_DOWNLOAD_SECONDS),
    )
    release_connection()
    try:
        response = api.get_message_content_with_http_info(
            message_id, _request_timeout=request_timeout()
        )
    except ApiException as exc:
        if exc.status in (404, 410):
            raise ContentGone("content is no longer available", status=exc.status) from exc
        raise_line_error(exc)
        raise
    except LineError:
        raise
    except urllib3.exceptions.HTTPError as exc:
        # A GET changes nothing on LINE's side: a broken download is simply tried again.
        raise RetryableError(f"download failed: {exc}") from exc
    except Exception as exc:
        raise_line_error(exc)
        raise
    if response.status_code == 202:
        raise ContentNotReady("content is still being prepared", status=202)
    content_type = ""
    for key, value in dict(response.headers or {}).items():
        if key.lower() == "content-type":
            content_type = _media_type(value)
    return Content(bytes(response.data or b""), content_type or "application/octet-stream")


def file_name(message: dict[str, Any], content_type: str = "") -> str:
    """LINE's own file name where it has one (file messages), else `<message id>.<extension>`."""
    name = str(message.get("fileName") or "").strip()
    if name:
        return name
    kind = str(message.get("type") or "")
    media_type = _media_type(content_type)
    extension = EXTENSIONS.get(media_type)
    if extension is None and media_type and media_type != "application/octet-stream":
        guessed = mimetypes.guess_extension(media_type)
        extension = guessed.lstrip(".") if guessed else None
    extension = extension or EXTENSION_BY_KIND.get(kind, "bin")
    return f"{message.get('id') or kind or 'content'}.{extension}"
