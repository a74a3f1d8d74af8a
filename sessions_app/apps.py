from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class BridgeAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin, whose site limits sign-in attempts (admin_site.py)."""

    default = False  # named in INSTALLED_APPS; SessionsAppConfig stays this module's default
    default_site = "sessions_app.admin_site.BridgeAdminSite"


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "LINE ↔ LiveChat sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
