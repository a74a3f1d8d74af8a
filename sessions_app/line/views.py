"""POST /line/webhook: verify, store in the inbox, answer. LINE waits 2 s at most, so no vendor is
called and nothing but the inbox is written; the delivery worker applies the events."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse

from sessions_app import inbox
from sessions_app.vendor_webhooks import vendor_webhook

from . import webhook

logger = logging.getLogger(__name__)


@vendor_webhook
def line_webhook(request: HttpRequest) -> JsonResponse:
    if not settings.LINE_CHANNEL_SECRET:
        logger.error("line webhook refused: LINE_CHANNEL_SECRET is not configured")
        return JsonResponse({"error": "LINE_CHANNEL_SECRET is not configured"}, status=403)
    try:
        webhook.verify(
            settings.LINE_CHANNEL_SECRET, request.body, request.headers.get("x-line-signature")
        )
    except webhook.InvalidSignature as exc:
        logger.warning("line webhook refused: %s", exc)
        return JsonResponse({"error": "invalid signature"}, status=403)
    try:
        _, events = webhook.parse(request.body)
    except webhook.InvalidBody as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    try:
        inbox.accept_line_events(events)
    except DatabaseError:
        # Not stored, so not acknowledged: LINE redelivers it (when redelivery is on).
        logger.exception("line webhook not stored events=%d", len(events))
        return JsonResponse({"error": "the events could not be stored; retry"}, status=503)
    # Heroku's router already logs every delivery (request id, status, time); a line of ours
    # at INFO cost 40-60 µs, a tenth of the webhook's CPU (bench/), so it is for DEBUG only.
    logger.debug("line webhook stored events=%d", len(events))
    return JsonResponse({})
