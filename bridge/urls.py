from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from sessions_app.health import healthz
from sessions_app.line.views import line_webhook
from sessions_app.livechat.connect_views import livechat_connect, livechat_connect_callback
from sessions_app.livechat.views import livechat_webhook

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("line/webhook", line_webhook, name="line-webhook"),
    path("livechat/webhook", livechat_webhook, name="livechat-webhook"),
    path("livechat/connect", livechat_connect, name="livechat-connect"),
    path("livechat/connect/callback", livechat_connect_callback, name="livechat-connect-callback"),
    path("", include("sessions_app.api.urls")),
]

if settings.SANDBOX_UI:
    urlpatterns.insert(0, path("sandbox/", include("sandbox.urls")))
