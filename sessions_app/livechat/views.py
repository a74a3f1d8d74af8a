"""POST /livechat/webhook: check the secret, store what it says, answer at once."""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse

from sessions_app import relay
from sessions_app.vendor_webhooks import vendor_webhook

from . import webhooks

logger = logging.getLogger(__name__)


@vendor_webhook
def livechat_webhook(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nested too deeply for Python
        return JsonResponse({"error": "malformed JSON"}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"error": "a JSON object is required"}, status=400)
    if not settings.LIVECHAT_WEBHOOK_SECRET:
        logger.error("livechat webhook refused: LIVECHAT_WEBHOOK_SECRET is not configured")
        return JsonResponse({"error": "LIVECHAT_WEBHOOK_SECRET is not configured"}, status=403)
    if not webhooks.secret_matches(
        settings.LIVECHAT_WEBHOOK_SECRET, webhooks.presented_secret(body)
    ):
        logger.warning("livechat webhook refused: wrong secret_key")
        return JsonResponse({"error": "invalid secret_key"}, status=403)
    try:
        event = webhooks.parse(body)
    except webhooks.InvalidWebhook as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    try:
        outcome = relay.agent_event(event)
    except (OperationalError, InterfaceError):
        # The database unavailable (a bug is a 500): rolled back, so not acknowledged, and
        # LiveChat sends it again (3 times within about a minute).
        logger.exception("livechat webhook not stored action=%s", event.action)
        return JsonResponse({"error": "the event could not be stored; retry"}, status=503)
    logger.info("livechat webhook action=%s outcome=%s", event.action, outcome)
    return JsonResponse({"status": outcome})
