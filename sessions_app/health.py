"""GET /healthz: is the database answering, what is not configured, and how the outbox is doing.

The status is 200 whenever the database answers: a vendor misconfigured, or an outbox backing up,
is reported in the body for monitoring, never by taking the dyno out of the load balancer (every
dyno would be taken out alike). Nothing here calls a vendor."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count, Min
from django.db.models.functions import Coalesce
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from .livechat.tokens import missing_settings, refused
from .models import InboundEvent, LiveChatCredential, Message

_NO_LIVECHAT_CALLS = "the bridge cannot call LiveChat, so no chat can be started"
# What each missing setting stops, on its own: with only some of a vendor's settings set, the
# operator is told what is still broken, not what the whole vendor would be.
WHAT_STOPS = {
    "LINE_CHANNEL_SECRET": "the LINE webhook refuses every call",
    "LINE_CHANNEL_ACCESS_TOKEN": (
        "nothing reaches LINE users (agents' replies wait in the outbox) and no LINE profile "
        "is read"
    ),
    "LIVECHAT_CLIENT_ID": _NO_LIVECHAT_CALLS,
    "LIVECHAT_CLIENT_SECRET": _NO_LIVECHAT_CALLS,
    "LIVECHAT_ORGANIZATION_ID": _NO_LIVECHAT_CALLS,
    "LIVECHAT_REFRESH_TOKEN": _NO_LIVECHAT_CALLS,
    "LIVECHAT_WEBHOOK_SECRET": "LiveChat webhooks are refused, so agents' replies reach no one",
    "BRIDGE_API_KEY": "/init, /messages, /send and /close refuse every call",
}


def what_stops(missing: list[str]) -> str:
    """What the missing settings stop, each consequence once."""
    text = "; ".join(dict.fromkeys(WHAT_STOPS[name] for name in missing))
    if "LIVECHAT_REFRESH_TOKEN" in missing:
        text += (
            " (instead of setting LIVECHAT_REFRESH_TOKEN, connect LiveChat at /livechat/connect "
            "or with manage.py livechat_connect)"
        )
    return text


def configuration_problems(*, read_database: bool = True) -> dict[str, list[str]]:
    """Per vendor, the settings that are missing (empty lists when all is set)."""
    line = [
        n for n in ("LINE_CHANNEL_SECRET", "LINE_CHANNEL_ACCESS_TOKEN") if not getattr(settings, n)
    ]
    livechat = missing_settings(read_database=read_database)
    if not settings.LIVECHAT_WEBHOOK_SECRET:
        livechat.append("LIVECHAT_WEBHOOK_SECRET")
    api = [] if settings.BRIDGE_API_KEY else ["BRIDGE_API_KEY"]
    return {"line": line, "livechat": livechat, "json_api": api}


def livechat_credentials() -> dict[str, Any]:
    """Whether the bridge holds what it needs to call LiveChat as the agent, from what is stored:
    `access_token` (a stored agent token, not expired), `refresh_token` (one can be fetched),
    `refused` (LiveChat refused the refresh token when the bridge last offered it: connect again)
    or `missing`. A refresh token revoked since the last refresh still says `refresh_token`: only
    a call would tell, and the health check makes none."""
    credential = LiveChatCredential.objects.order_by("pk").first()
    now = timezone.now()
    expires = credential.access_token_expires_at if credential else None
    if credential and refused(credential):
        state = "refused"
    elif credential and credential.access_token and expires and expires > now:
        state = "access_token"
    elif (credential and credential.refresh_token) or settings.LIVECHAT_REFRESH_TOKEN:
        state = "refresh_token"
    else:
        state = "missing"
    app_settings = ("LIVECHAT_CLIENT_ID", "LIVECHAT_CLIENT_SECRET", "LIVECHAT_ORGANIZATION_ID")
    return {
        "credentials": state,
        # The token service needs the app's id and secret as well as a token (tokens.py).
        "usable": state not in ("missing", "refused")
        and all(getattr(settings, n) for n in app_settings),
        "access_token_expires_in": int((expires - now).total_seconds())
        if state == "access_token"
        else None,
    }


def outbox() -> dict[str, Any]:
    """Per route: rows waiting (and the age in seconds of the oldest one), rows failed for good."""
    now = timezone.now()
    routes = Message.Route.values
    pending = {
        row["route"]: row
        for row in Message.objects.filter(status=Message.Status.PENDING)
        .order_by()
        .values("route")
        # A row an operator put back (Retry delivery) has waited since then, not since it was
        # first queued: a day-old retried row would otherwise look like a day-old outage.
        .annotate(n=Count("id"), oldest=Min(Coalesce("requeued_at", "created_at")))
    }
    failed = dict(
        Message.objects.filter(status=Message.Status.FAILED)
        .order_by()
        .values("route")
        .annotate(n=Count("id"))
        .values_list("route", "n")
    )
    return {
        "pending": {route: pending[route]["n"] if route in pending else 0 for route in routes},
        "oldest_pending_seconds": {
            route: max(int((now - pending[route]["oldest"]).total_seconds()), 0)
            if route in pending
            else None
            for route in routes
        },
        "failed": {route: failed.get(route, 0) for route in routes},
        "failed_total": sum(failed.values()),
    }


def inbox() -> dict[str, Any]:
    """LINE events stored by the webhook that the worker has not applied yet."""
    waiting = InboundEvent.objects.filter(applied_at__isnull=True).aggregate(
        n=Count("id"), oldest=Min("received_at")
    )
    oldest = waiting["oldest"]
    return {
        "pending": waiting["n"],
        "oldest_pending_seconds": (
            max(int((timezone.now() - oldest).total_seconds()), 0) if oldest else None
        ),
    }


def healthz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return JsonResponse({"database": f"unavailable: {type(exc).__name__}"}, status=503)
    body: dict[str, Any] = {"database": "ok"}
    try:
        problems = configuration_problems()
        body["not_configured"] = {k: v for k, v in problems.items() if v}
        body["line"] = {"configured": not problems["line"]}
        body["livechat"] = {"configured": not problems["livechat"], **livechat_credentials()}
        body["inbox"] = inbox()
        body["outbox"] = outbox()
    except DatabaseError as exc:
        # The database answers but not these queries (say, before the first migrate): report it
        # and stay in the load balancer, as every dyno would be in the same state.
        body["error"] = f"database query failed: {type(exc).__name__}"
    return JsonResponse(body, status=200)
