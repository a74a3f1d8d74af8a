"""`python manage.py bridge_status`: what is configured, and can LiveChat be reached right now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count, Min
from django.db.models.functions import Coalesce

from sessions_app.health import configuration_problems, livechat_credentials, what_stops
from sessions_app.models import Message


class Command(BaseCommand):
    help = "Say which vendor settings are missing and what waits in the outbox."

    def handle(self, *args: Any, **options: Any) -> None:
        for area, missing in configuration_problems().items():
            if missing:
                self.stdout.write(
                    self.style.WARNING(
                        f"{area}: NOT configured: set {', '.join(missing)}: {what_stops(missing)}"
                    )
                )
            else:
                self.stdout.write(self.style.SUCCESS(f"{area}: configured"))
        if livechat_credentials()["credentials"] == "refused":
            self.stdout.write(
                self.style.ERROR(
                    "livechat: LiveChat refused the stored refresh token: connect again "
                    "(manage.py livechat_connect, or /livechat/connect); messages wait until then"
                )
            )
        waiting = (
            Message.objects.filter(status=Message.Status.PENDING)
            .values("route")
            .annotate(n=Count("id"), oldest=Min(Coalesce("requeued_at", "created_at")))
        )
        for row in waiting:
            line = (
                f"outbox {row['route']}: {row['n']} waiting since {row['oldest']:%Y-%m-%d %H:%M:%S}"
            )
            # Why the queue does not move: what the vendor last answered for its oldest row that
            # was tried (LINE's monthly limit, a revoked token, an outage).
            cause = (
                Message.objects.filter(status=Message.Status.PENDING, route=row["route"])
                .exclude(last_error="")
                .order_by("created_at", "id")
                .values_list("last_error", flat=True)
                .first()
            )
            if cause:
                line += f", the oldest tried one because: {cause}"
            self.stdout.write(line)
        failed = Message.objects.filter(status=Message.Status.FAILED).count()
        if failed:
            self.stdout.write(
                self.style.ERROR(f"{failed} message(s) failed for good (see the admin)")
            )
