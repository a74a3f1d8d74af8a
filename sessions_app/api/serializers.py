from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

# LiveChat takes at most 16 KB of text per event.
MAX_MESSAGE_BYTES = 16_000


class StrictCharField(serializers.CharField):
    """A string, and only a string: the earlier bridge's clients never send numbers as text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class LineIdSerializer(serializers.Serializer):
    line_id = StrictCharField(max_length=64)


class InitSerializer(LineIdSerializer):
    display_name = serializers.CharField(
        max_length=255, required=False, allow_blank=True, default=""
    )
    prechatEntities = serializers.ListField(
        child=serializers.DictField(), required=False, default=list, max_length=20
    )
    delivery = serializers.ChoiceField(choices=["pull", "push"], required=False, default="pull")

    def session_fields(self) -> list[dict[str, str]]:
        """Salesforce-style prechat entities as LiveChat session fields an agent can read."""
        fields: list[dict[str, str]] = []
        for entity in self.validated_data["prechatEntities"]:
            name = str(entity.get("entityName") or "prechat")
            for mapping in entity.get("entityFieldsMaps") or []:
                if not isinstance(mapping, dict) or not mapping.get("fieldName"):
                    continue
                value = mapping.get("value", mapping.get("label", ""))
                fields.append({f"{name}.{mapping['fieldName']}"[:100]: str(value)[:500]})
        return fields


class SendSerializer(LineIdSerializer):
    message = StrictCharField(trim_whitespace=False)

    def validate_message(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("empty message")
        if len(value.encode()) > MAX_MESSAGE_BYTES:
            raise serializers.ValidationError("message too long")
        return value


class MessagesSerializer(LineIdSerializer):
    wait = serializers.FloatField(required=False, min_value=0)

    def validate_wait(self, value: Any) -> float:
        return min(float(value), settings.MESSAGES_MAX_WAIT)
