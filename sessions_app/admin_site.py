"""The admin site, with its sign-in rate-limited.

Each password checked costs about a quarter of a second of CPU (PBKDF2), on the threads and cores
that answer LINE's webhooks, which LINE gives 2 s. Anyone can post to /admin/login/, so a few dozen
at once would make webhooks miss that deadline. Sign-in attempts are therefore counted, with DRF's
throttling (counts in Django's default cache, so per web process), per client address and in all,
and those over either ceiling are answered 429 before any password is checked."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import SimpleRateThrottle

# A person signs in a few times a day; mistyping a password five times a minute is rare.
PER_ADDRESS_RATE = "5/min"
# What the passwords checked may cost a web process: 30 a minute is ~12% of one core.
OVERALL_RATE = "30/min"


class _SignInThrottle(SimpleRateThrottle):
    scope = "admin_sign_in"

    def __init__(self, rate: str, per_address: bool) -> None:
        self.rate, self.per_address = rate, per_address
        super().__init__()

    def get_rate(self) -> str:
        return self.rate

    def get_cache_key(self, request: Any, view: Any) -> str:
        # The address Heroku's router saw: the last entry of X-Forwarded-For (NUM_PROXIES).
        ident = self.get_ident(request) if self.per_address else "all"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class BridgeAdminSite(admin.AdminSite):
    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if request.method == "POST":
            throttles = [
                _SignInThrottle(PER_ADDRESS_RATE, per_address=True),
                _SignInThrottle(OVERALL_RATE, per_address=False),
            ]
            # Each counts the attempt only when the ones before it allowed it.
            refusing = next((t for t in throttles if not t.allow_request(request, None)), None)
            if refusing is not None:
                wait = refusing.wait() or 60
                return HttpResponse(
                    "Too many sign-in attempts. Try again in a minute.",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                    headers={"Retry-After": str(max(1, round(wait)))},
                )
        return super().login(request, extra_context)
