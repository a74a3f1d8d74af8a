from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="sandbox"),
    path("state", views.state, name="sandbox-state"),
    path("user", views.user_says, name="sandbox-user"),
    path("agent", views.agent_acts, name="sandbox-agent"),
    path("fault", views.fault, name="sandbox-fault"),
]
