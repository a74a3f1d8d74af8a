from django.contrib import admin
from django.urls import include, path

from sessions_app.health import healthz
from sessions_app.line.views import line_webhook
from sessions_app.livechat.views import livechat_webhook

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("line/webhook", line_webhook, name="line-webhook"),
    path("livechat/webhook", livechat_webhook, name="livechat-webhook"),
    path("", include("sessions_app.api.urls")),
]
