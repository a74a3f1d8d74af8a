"""/livechat/connect and its callback: an administrator connects the bridge to LiveChat in the
browser (OAuth authorization-code grant) instead of copying tokens by hand.

Connecting replaces the credentials every chat depends on, so it takes the permission to change
them (or a superuser), and starts with a POST: a link or an image on another site cannot start
it in an administrator's browser."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from . import oauth
from .errors import LiveChatError

logger = logging.getLogger(__name__)

# The state lives in the Django session, so only the browser that started the flow can finish it.
SESSION_STATE_KEY = "livechat_oauth_state"
TEMPLATE = "sessions_app/livechat_connect.html"
# Staff without it get a 403 (superusers have every permission).
may_connect = permission_required("sessions_app.change_livechatcredential", raise_exception=True)


def redirect_uri_for(request: HttpRequest) -> str:
    """LIVECHAT_REDIRECT_URI when set (it must equal one registered for the app in the Developer
    Console, which a proxy may hide from Django), else this site's callback URL."""
    return settings.LIVECHAT_REDIRECT_URI or request.build_absolute_uri(
        reverse("livechat-connect-callback")
    )


@never_cache
@require_http_methods(["GET", "POST"])
@staff_member_required
@may_connect
def livechat_connect(request: HttpRequest) -> HttpResponse:
    """GET: the page with the button; POST (CSRF-checked): off to LiveChat's consent page."""
    missing = oauth.client_settings_missing()
    if missing:
        return _page(
            request,
            status=503,
            error=f"LiveChat is not configured: set {', '.join(missing)} and try again.",
        )
    if request.method == "GET":
        return _page(request)
    state = oauth.new_state()
    request.session[SESSION_STATE_KEY] = state
    return HttpResponseRedirect(
        oauth.authorize_url(redirect_uri=redirect_uri_for(request), state=state)
    )


@never_cache
@require_GET
@staff_member_required
@may_connect
def livechat_connect_callback(request: HttpRequest) -> HttpResponse:
    # Popped, not read: a state is good for one callback, so a replayed URL is refused too.
    expected = request.session.pop(SESSION_STATE_KEY, None)
    if not oauth.states_match(expected, request.GET.get("state")):
        logger.warning("livechat connect refused: state mismatch user=%s", request.user.pk)
        return _page(
            request,
            status=400,
            error=(
                "This answer does not belong to a connection started from this browser "
                "(state mismatch). Nothing was stored. Start again."
            ),
        )
    if request.GET.get("error"):
        return _page(
            request,
            status=400,
            error=f"LiveChat did not grant access ({request.GET['error']}). Nothing was stored.",
        )
    code = request.GET.get("code", "")
    if not code:
        return _page(request, status=400, error="LiveChat sent no code. Nothing was stored.")
    try:
        connection = oauth.exchange_code(code=code, redirect_uri=redirect_uri_for(request))
    except LiveChatError as exc:
        logger.warning("livechat connect: code exchange failed: %s", exc)
        return _page(
            request,
            status=502,
            error=f"LiveChat refused the code: {exc}. Nothing was stored. Start again.",
        )
    logger.info(
        "livechat connected account=%s organization=%s user=%s",
        connection.account_id,
        connection.organization_id,
        request.user.pk,
    )
    return _page(request, connection=connection)


def _page(
    request: HttpRequest,
    *,
    status: int = 200,
    error: str = "",
    connection: oauth.Connection | None = None,
) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": "LiveChat connection",
        "error": error,
        "connection": connection,
        "connect_url": reverse("livechat-connect"),
    }
    return render(request, TEMPLATE, context, status=status)
