from django.urls import re_path

from . import views

# The earlier bridge's clients call these with and without a trailing slash.
urlpatterns = [
    re_path(r"^init/?$", views.InitView.as_view(), name="api-init"),
    re_path(r"^messages/?$", views.MessagesView.as_view(), name="api-messages"),
    re_path(r"^send/?$", views.SendView.as_view(), name="api-send"),
    re_path(r"^close/?$", views.CloseView.as_view(), name="api-close"),
]
