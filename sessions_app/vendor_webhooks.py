"""The vendors' webhooks skip the middleware made for browsers.

LINE and LiveChat POST JSON, server to server. Static files, sessions, CSRF, the signed-in user,
messages and frame options have nothing to do for them, and on the LINE webhook they cost about a
sixth of a delivery's CPU (measured with bench/). `VendorWebhookMiddleware` sits in MIDDLEWARE
after the request id and SecurityMiddleware (HTTPS redirect, security headers) and answers the
views marked `@vendor_webhook` itself; every other request goes down the whole stack."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

View = Callable[..., HttpResponse]


def vendor_webhook(view: View) -> View:
    """A view a vendor POSTs to: no CSRF token, POST only, and none of the browser middleware."""
    wrapped = csrf_exempt(require_POST(view))
    wrapped.vendor_webhook = True
    return wrapped


class VendorWebhookMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        if not getattr(match.func, "vendor_webhook", False):
            return self.get_response(request)
        request.resolver_match = match
        response = match.func(request, *match.args, **match.kwargs)
        if not response.streaming and not response.has_header("Content-Length"):
            # As CommonMiddleware would: without it gunicorn answers chunked.
            response.headers["Content-Length"] = str(len(response.content))
        return response
