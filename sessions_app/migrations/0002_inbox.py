from django.db import migrations, models


def mark_applied(apps, schema_editor):
    # Every event stored before the inbox existed was applied when it was stored.
    InboundEvent = apps.get_model("sessions_app", "InboundEvent")
    InboundEvent.objects.filter(applied_at__isnull=True).update(applied_at=models.F("received_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="inboundevent",
            name="applied_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(mark_applied, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="inboundevent",
            index=models.Index(
                condition=models.Q(("applied_at__isnull", True)),
                fields=["id"],
                name="inbound_pending",
            ),
        ),
    ]
