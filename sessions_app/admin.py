"""The operators' admin: find a conversation, read its transcript, see what failed and send it
again. What the bridge keeps consistent by itself (vendor ids, delivery state, leases, retry keys)
is read-only here; the only change to delivery is the "Retry delivery" action. Tokens and secrets
are never shown: not the customer tokens, not the LiveChat credentials, not the webhook payloads'
secret_key or reply tokens."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.constants import LOOKUP_SEP
from django.db.models.functions import Coalesce
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from .livechat.tokens import refused
from .models import ChatSession, InboundEvent, LiveChatCredential, Message

logger = logging.getLogger(__name__)

admin.site.site_header = "LINE ↔ LiveChat bridge"
admin.site.site_title = "LINE ↔ LiveChat bridge"

Status = Message.Status

# Keys whose values are credentials wherever they turn up in a stored payload.
SECRET_KEYS = ("token", "secret", "password", "authorization", "api_key", "apikey")
MASK = "••••••"


def redacted(value: Any) -> Any:
    """A copy of a JSON value with every credential-like key's value masked."""
    if isinstance(value, dict):
        return {
            key: MASK if any(s in str(key).lower() for s in SECRET_KEYS) else redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redacted(item) for item in value]
    return value


def payload_html(value: Any) -> str:
    if not value:
        return "-"
    text = json.dumps(redacted(value), ensure_ascii=False, indent=2, sort_keys=True)
    return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)


class UnfilterableSecrets:
    """A field that is never shown is not filterable either: with `?refresh_token__regex=^dal:A`
    in a changelist's address, its count ("1 result" or "0") would tell the value one guessed
    character at a time, to anyone who may only view the list. Django allows a lookup on any of
    a model's own fields, the JSON payloads' keys included."""

    secret_fields: tuple[str, ...] = ()  # field paths, as in a lookup

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        for path in self.secret_fields:
            if lookup == path or lookup.startswith(path + LOOKUP_SEP):
                return False  # Django answers 400
        return super().lookup_allowed(lookup, value, request)


class ReadOnlyAdmin(UnfilterableSecrets, admin.ModelAdmin):
    """Rows the bridge writes and operators only read."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- sessions and their transcript ------------------------------------------------------------


def _count_of(status: str) -> Coalesce:
    """Per session, its messages in `status`: a correlated subquery, so a page of sessions costs
    a page of index lookups rather than a join over the whole transcript table."""
    rows = (
        Message.objects.filter(session=OuterRef("pk"), status=status)
        .order_by()
        .values("session")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), 0)


class LatestMessagesFormSet(BaseInlineFormSet):
    """The last TRANSCRIPT_LIMIT messages of the session, oldest first."""

    def get_queryset(self) -> QuerySet[Message]:
        if not hasattr(self, "_latest"):
            queryset = super().get_queryset()
            latest = list(
                queryset.order_by("-pk").values_list("pk", flat=True)[: MessageInline.limit]
            )
            self._latest = queryset.filter(pk__in=latest).order_by("pk")
        return self._latest


class MessageInline(admin.TabularInline):
    model = Message
    formset = LatestMessagesFormSet
    limit = 200
    verbose_name = "message"
    verbose_name_plural = f"transcript (the last {limit} messages, oldest first)"
    fields = (
        "created_at",
        "direction",
        "kind",
        "text",
        "status",
        "attempts",
        "last_error",
        "sent_at",
    )
    readonly_fields = fields
    show_change_link = True
    extra = 0
    can_delete = False

    @admin.display(description="body")
    def text(self, message: Message) -> str:
        return Truncator(message.body).chars(1000)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ChatSession)
class ChatSessionAdmin(UnfilterableSecrets, admin.ModelAdmin):
    secret_fields = ("customer_token",)
    list_display = (
        "line_id",
        "display_name",
        "state",
        "delivery_mode",
        "agent_name",
        "updated_at",
        "waiting",
        "failed",
    )
    list_filter = ("state", "delivery_mode")
    search_fields = ("line_id", "display_name", "customer_id", "chat_id")
    date_hierarchy = "updated_at"
    inlines = (MessageInline,)
    # customer_token is in no fieldset, so it is never rendered, not even as a hidden input.
    fieldsets = (
        (None, {"fields": ("line_id", "display_name", "language", "picture_url")}),
        (
            "Conversation",
            {"fields": ("state", "delivery_mode", "agent_name", "all_messages")},
        ),
        (
            "LiveChat",
            {
                "fields": (
                    "customer_id",
                    "has_customer_token",
                    "customer_token_expires_at",
                    "chat_id",
                    "thread_id",
                )
            },
        ),
        (None, {"fields": ("created_at", "updated_at")}),
    )
    # Only the bridge's own labels can be edited; the rest is the relay's to keep right.
    readonly_fields = (
        "line_id",
        "picture_url",
        "state",
        "delivery_mode",
        "agent_name",
        "all_messages",
        "customer_id",
        "has_customer_token",
        "customer_token_expires_at",
        "chat_id",
        "thread_id",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChatSession]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                waiting_count=_count_of(Status.PENDING), failed_count=_count_of(Status.FAILED)
            )
        )

    @admin.display(description="waiting", ordering="waiting_count")
    def waiting(self, session: ChatSession) -> int:
        return session.waiting_count

    @admin.display(description="failed", ordering="failed_count")
    def failed(self, session: ChatSession) -> int:
        return session.failed_count

    @admin.display(description="customer token", boolean=True)
    def has_customer_token(self, session: ChatSession) -> bool:
        return bool(session.customer_token)

    @admin.display(description="all messages")
    def all_messages(self, session: ChatSession) -> str:
        url = reverse("admin:sessions_app_message_changelist")
        return format_html('<a href="{}?session__id__exact={}">all messages</a>', url, session.pk)

    def save_model(self, request: HttpRequest, obj: ChatSession, form: Any, change: bool) -> None:
        # Only the edited columns: a full save would write back the state, chat id and token the
        # relay may have changed since this form was loaded.
        fields = [name for name in form.changed_data if name in ("display_name", "language")]
        if fields:
            obj.save(update_fields=[*fields, "updated_at"])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- messages: the outbox ---------------------------------------------------------------------


class DeliveryFilter(admin.SimpleListFilter):
    title = "delivery"
    parameter_name = "delivery"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("failed", "Failed deliveries"),
            ("retrying", "Waiting after a failed attempt"),
            ("pending", "Waiting to be delivered"),
            ("sent", "Delivered"),
            ("cancelled", "Cancelled"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> QuerySet[Message]:
        value = self.value()
        if value == "retrying":
            return queryset.filter(status=Status.PENDING).exclude(last_error="")
        if value in Status.values:
            return queryset.filter(status=value)
        return queryset


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    secret_fields = ("payload",)  # a follow's reply token
    list_display = (
        "id",
        "session_link",
        "direction",
        "route",
        "kind",
        "short_body",
        "status",
        "attempts",
        "short_error",
        "created_at",
        "next_attempt_at",
        "sent_at",
    )
    list_display_links = ("id",)
    list_filter = (DeliveryFilter, "route", "direction", "kind")
    list_select_related = ("session",)
    search_fields = (
        "session__line_id",
        "session__display_name",
        "line_message_id",
        "livechat_event_id",
        "livechat_chat_id",
    )
    date_hierarchy = "created_at"
    actions = ("retry_delivery",)
    fields = (
        "session",
        "direction",
        "route",
        "kind",
        "body",
        "payload_shown",
        "status",
        "attempts",
        "next_attempt_at",
        "leased_until",
        "uncertain",
        "last_error",
        "retry_key",
        "source_event_id",
        "line_message_id",
        "livechat_chat_id",
        "livechat_thread_id",
        "livechat_event_id",
        "created_at",
        "requeued_at",
        "sent_at",
    )
    readonly_fields = fields

    @admin.display(description="session", ordering="session__line_id")
    def session_link(self, message: Message) -> str:
        url = reverse("admin:sessions_app_chatsession_change", args=[message.session_id])
        session = message.session
        return format_html('<a href="{}">{}</a>', url, session.display_name or session.line_id)

    @admin.display(description="body")
    def short_body(self, message: Message) -> str:
        return Truncator(message.body).chars(80)

    @admin.display(description="last error")
    def short_error(self, message: Message) -> str:
        return Truncator(message.last_error).chars(80)

    @admin.display(description="payload")
    def payload_shown(self, message: Message) -> str:
        return payload_html(message.payload)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("sessions_app.change_message")

    @admin.action(description="Retry delivery", permissions=["retry"])
    def retry_delivery(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        """Failed rows go back in the queue, due now, with a full DELIVERY_MAX_AGE_SECONDS from
        now. `attempts` and `last_error` stay, as the history of what went wrong; the worker
        overwrites the error on the next outcome."""
        selected = queryset.count()
        ids = list(queryset.filter(status=Status.FAILED).values_list("pk", flat=True))
        now = timezone.now()
        retried = Message.objects.filter(pk__in=ids, status=Status.FAILED).update(
            status=Status.PENDING,
            next_attempt_at=now,
            requeued_at=now,
            leased_until=None,
            lease_token="",
        )
        for message in Message.objects.filter(pk__in=ids):
            self.log_change(request, message, "Retry delivery: back in the queue.")
        logger.info("admin retry delivery messages=%s user=%s", ids, request.user.pk)
        self.message_user(
            request,
            f"{retried} failed message(s) put back in the delivery queue.",
            messages.SUCCESS if retried else messages.WARNING,
        )
        if selected > retried:
            self.message_user(
                request,
                f"{selected - retried} selected message(s) had not failed and were left as is.",
                messages.WARNING,
            )


# --- inbound events and credentials ------------------------------------------------------------


@admin.register(InboundEvent)
class InboundEventAdmin(ReadOnlyAdmin):
    secret_fields = ("payload",)  # LINE's reply tokens
    list_display = ("received_at", "source", "event_type", "event_id", "outcome", "applied_at")
    list_filter = ("source", "event_type", "outcome")
    search_fields = ("event_id",)
    date_hierarchy = "received_at"
    fields = (
        "source",
        "event_id",
        "event_type",
        "outcome",
        "received_at",
        "applied_at",
        "payload_shown",
    )
    readonly_fields = fields

    @admin.display(description="payload (credentials masked)")
    def payload_shown(self, event: InboundEvent) -> str:
        return payload_html(event.payload)


@admin.register(LiveChatCredential)
class LiveChatCredentialAdmin(ReadOnlyAdmin):
    """Which LiveChat account the bridge acts as, and until when; never a token's value."""

    secret_fields = ("access_token", "refresh_token", "refused_grant")

    list_display = (
        "account_id",
        "organization_id",
        "access_token_expires_at",
        "has_refresh_token",
        "refresh_token_refused",
        "updated_at",
    )
    fields = (
        "account_id",
        "organization_id",
        "access_token_expires_at",
        "has_access_token",
        "has_refresh_token",
        "refresh_token_refused",
        "updated_at",
    )
    readonly_fields = fields

    @admin.display(description="access token", boolean=True)
    def has_access_token(self, credential: LiveChatCredential) -> bool:
        return bool(credential.access_token)

    @admin.display(description="refresh token", boolean=True)
    def has_refresh_token(self, credential: LiveChatCredential) -> bool:
        return bool(credential.refresh_token)

    @admin.display(description="refused by LiveChat (connect again)", boolean=True)
    def refresh_token_refused(self, credential: LiveChatCredential) -> bool:
        return refused(credential)
