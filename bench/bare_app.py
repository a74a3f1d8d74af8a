"""The baseline for the webhook throughput ratio: Django with one view, no middleware, no apps,
no database, that checks LINE's signature with the SDK validator the bridge uses and answers
200 `{}`. Served by gunicorn with the bridge's own gunicorn.conf.py:

    gunicorn bare_app:application --pythonpath bench --config gunicorn.conf.py --bind ...
"""

from __future__ import annotations

import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ["SECRET_KEY"],
    ALLOWED_HOSTS=os.environ.get("ALLOWED_HOSTS", "127.0.0.1").split(","),
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    DATABASES={},
    USE_TZ=True,
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from linebot.v3.webhook import SignatureValidator  # noqa: E402

CHANNEL_SECRET = os.environ["LINE_CHANNEL_SECRET"]


def line_webhook(request: HttpRequest) -> JsonResponse:
    signature = request.headers.get("x-line-signature") or ""
    if not SignatureValidator(CHANNEL_SECRET).validate(request.body.decode("utf-8"), signature):
        return JsonResponse({"error": "invalid signature"}, status=403)
    response = JsonResponse({})
    # What the bridge's CommonMiddleware adds: without it gunicorn would answer chunked, an extra
    # write per request that would flatter the ratio.
    response["Content-Length"] = str(len(response.content))
    return response


urlpatterns = [path("line/webhook", line_webhook)]

application = get_wsgi_application()
