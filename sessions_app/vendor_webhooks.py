"""The vendors' webhooks skip the middleware made for browsers.

LINE and LiveChat POST JSON, server to server, and read nothing of the answer but its status. The
HTTPS redirect and security headers (SecurityMiddleware), static files, sessions, CSRF, the
signed-in user, messages and frame options protect or serve browsers; on the LINE webhook they
cost a sixth to a fifth of a delivery's CPU (measured with bench/). A redirect would not help a
webhook sent over plain HTTP either: its body has already crossed the network, and Django's 301
is not followed with a POST. So `VendorWebhookMiddleware` sits in MIDDLEWARE right after the
request id and answers the views marked `@vendor_webhook` itself; every other request goes down
the whole stack."""

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
