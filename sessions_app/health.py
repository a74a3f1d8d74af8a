"""GET /healthz: is the database answering, and what is not configured."""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

from .livechat.tokens import missing_settings


def configuration_problems() -> dict[str, list[str]]:
    """Per vendor, the settings that are missing (empty lists when all is set)."""
    line = [
        n for n in ("LINE_CHANNEL_SECRET", "LINE_CHANNEL_ACCESS_TOKEN") if not getattr(settings, n)
    ]
    livechat = missing_settings()
    if not settings.LIVECHAT_WEBHOOK_SECRET:
        livechat.append("LIVECHAT_WEBHOOK_SECRET")
    api = [] if settings.BRIDGE_API_KEY else ["BRIDGE_API_KEY"]
    return {"line": line, "livechat": livechat, "json_api": api}


def healthz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except DatabaseError as exc:
        database = f"unavailable: {type(exc).__name__}"
    problems = configuration_problems()
    body = {
        "database": database,
        "not_configured": {k: v for k, v in problems.items() if v},
    }
    return JsonResponse(body, status=200 if database == "ok" else 503)
