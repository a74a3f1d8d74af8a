"""The admin site, with its sign-in rate-limited.

Each password checked costs about a quarter of a second of CPU (PBKDF2), on the threads and cores
that answer LINE's webhooks, which LINE gives 2 s. Anyone can post to /admin/login/, so a few dozen
at once would make webhooks miss that deadline. Sign-in attempts are therefore counted, with DRF's
throttling (counts in Django's default cache, so per web process), per client address and in all,
and those over either ceiling are answered 429 before any password is checked.

The ceiling in all alone would let anyone posting wrong passwords from many addresses keep every
operator out for as long as they kept at it. So a sign-in that works leaves a signed cookie in the
browser naming the user (a "device cookie", as OWASP's guidance on guessing attacks calls it), and
that browser's attempts for that user are counted per cookie instead of in all (and per address
still). Only someone who knew the password holds such a cookie, and a stolen one costs no more than
its own ceiling however many addresses it is sent from, which is why a password change need not
revoke it: its holder may try passwords no faster than from any one address."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.contrib.auth.forms import UsernameField
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from rest_framework.throttling import SimpleRateThrottle

# A person signs in a few times a day; mistyping a password five times a minute is rare.
PER_ADDRESS_RATE = "5/min"
# What the passwords checked may cost a web process: 30 a minute is ~12% of one core.
OVERALL_RATE = "30/min"
# A browser that signed in before: the same allowance as an address, whichever addresses it uses.
PER_BROWSER_RATE = "5/min"

SIGNED_IN_COOKIE = "bridge_admin_signed_in"
# Distinct from any other value the site signs, so that none can be passed off as this cookie.
SIGNED_IN_SALT = "sessions_app.admin_site.signed_in_before"
# Bounds how long a leaked cookie serves; each sign-in renews it, so an operator who signs in at
# least once a month always has one.
SIGNED_IN_MAX_AGE = timedelta(days=30)


class _SignInThrottle(SimpleRateThrottle):
    scope = "admin_sign_in"

    def __init__(self, rate: str, ident: str | None = None) -> None:
        self.rate, self.ident = rate, ident
        super().__init__()

    def get_rate(self) -> str:
        return self.rate

    def get_cache_key(self, request: Any, view: Any) -> str:
        # No ident: the address Heroku's router saw, the last entry of X-Forwarded-For
        # (NUM_PROXIES).
        ident = self.ident or self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


def signed_in_before(request: HttpRequest) -> str | None:
    """The id of this browser's sign-in cookie if it is genuine, recent and for the user whose
    password is posted; otherwise None."""
    value = request.get_signed_cookie(
        SIGNED_IN_COOKIE, default=None, salt=SIGNED_IN_SALT, max_age=SIGNED_IN_MAX_AGE
    )
    if value is None:
        return None
    browser, _, username = value.partition(":")
    # The cookie shows that this browser knew that user's password, not anyone else's. Read as the
    # sign-in form reads it (stripped, NFKC), so that a username autofilled with a trailing space
    # is not turned away.
    posted = UsernameField().to_python(request.POST.get("username"))
    return browser if browser and username == posted else None


def remember_sign_in(request: HttpRequest, response: HttpResponse, admin_root: str) -> None:
    """Mark the browser as one that has signed in as request.user."""
    response.set_signed_cookie(
        SIGNED_IN_COOKIE,
        # A fresh id per sign-in: the per-browser count of a cookie that leaks is its own.
        f"{secrets.token_urlsafe(12)}:{request.user.get_username()}",
        salt=SIGNED_IN_SALT,
        max_age=SIGNED_IN_MAX_AGE,
        path=admin_root,
        secure=request.is_secure(),
        httponly=True,
        # Only the admin's own sign-in form needs it sent, and another site then cannot make this
        # browser spend its allowance.
        samesite="Strict",
    )


class BridgeAdminSite(admin.AdminSite):
    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if request.method == "POST":
            browser = signed_in_before(request)
            throttles = [
                _SignInThrottle(PER_ADDRESS_RATE),
                _SignInThrottle(PER_BROWSER_RATE, ident=f"browser-{browser}")
                if browser
                else _SignInThrottle(OVERALL_RATE, ident="all"),
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
        response = super().login(request, extra_context)
        # LoginView redirects a POST only when the password was right, and request.user is then
        # whoever it signed in (a failed POST by someone already signed in answers the form).
        if (
            request.method == "POST"
            and response.status_code == 302
            and request.user.is_authenticated
        ):
            remember_sign_in(request, response, reverse("admin:index", current_app=self.name))
        return response
