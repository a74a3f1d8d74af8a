"""A ceiling on JSON API calls per API key (`BRIDGE_API_RATE`, e.g. "600/min"; "off" for none).

A guard against a runaway client (a retry loop, a bug polling without `wait`), not a quota. The
counts live in Django's default cache: the in-process memory cache unless CACHES says otherwise,
so the ceiling holds per web process (WEB_CONCURRENCY processes per dyno, each with its own)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

if TYPE_CHECKING:  # rest_framework.views imports this module while it is being defined
    from rest_framework.request import Request
    from rest_framework.views import APIView


class APIKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_rate(self) -> str | None:
        # Read on each request (DRF's THROTTLE_RATES is frozen at import), so that a test or a
        # settings override takes effect at once.
        return settings.BRIDGE_API_RATE or None

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        key_id = getattr(request.user, "key_id", None)
        if not key_id:
            return None  # not authenticated: refused before throttling anyway
        return self.cache_format % {"scope": self.scope, "ident": key_id}
