"""What the bridge keeps: chat sessions, the transcript (which is also the outbox), inbound event
ids for deduplication, and the LiveChat credentials that rotate on every refresh."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class ChatSession(models.Model):
    """One LINE user's conversation with the business, across all its LiveChat threads."""

    class State(models.TextChoices):
        NEW = "new", "no chat yet"
        OPEN = "open", "open, waiting for an agent"
        QUEUED = "queued", "queued"
        WITH_AGENT = "with_agent", "with an agent"
        ENDED = "ended", "ended"

    class DeliveryMode(models.TextChoices):
        PUSH = "push", "pushed to LINE"
        PULL = "pull", "pulled through /messages"

    line_id = models.CharField(max_length=64, unique=True)
    display_name = models.CharField(max_length=255, blank=True)
    language = models.CharField(max_length=16, blank=True)
    picture_url = models.URLField(max_length=1000, blank=True)
    delivery_mode = models.CharField(
        max_length=8, choices=DeliveryMode.choices, default=DeliveryMode.PUSH
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.NEW)
    agent_name = models.CharField(max_length=255, blank=True)

    # LINE refused the profile (404: the user is not a friend, or blocked the account): not asked
    # again at each message, only after a follow or a day later.
    profile_refused_at = models.DateTimeField(null=True, blank=True)

    customer_id = models.CharField(max_length=64, blank=True, db_index=True)
    customer_token = models.TextField(blank=True)
    customer_token_expires_at = models.DateTimeField(null=True, blank=True)
    chat_id = models.CharField(max_length=64, blank=True, db_index=True)
    thread_id = models.CharField(max_length=64, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"{self.display_name or self.line_id} ({self.get_state_display()})"

    @property
    def route_to_user(self) -> str:
        if self.delivery_mode == self.DeliveryMode.PULL:
            return Message.Route.API_PULL
        return Message.Route.LINE_PUSH


# How a row queued by `/send` with an `Idempotency-Key` keeps that key in `source_event_id`; a
# LINE webhookEventId never starts so.
IDEMPOTENCY_KEY_PREFIX = "api:"


class Message(models.Model):
    """One thing said, or one notice or action, in either direction.

    The row is also the job that carries it to the other side: the delivery worker (or, for pull
    sessions, /messages) takes the oldest due row of each (session, route) mailbox."""

    class Direction(models.TextChoices):
        TO_AGENT = "to_agent", "user → agent"
        TO_USER = "to_user", "agent → user"

    class Route(models.TextChoices):
        LIVECHAT = "livechat", "LiveChat"
        LINE_PUSH = "line_push", "LINE push"
        # Apart from the pushes: a read mark waiting for LINE never holds up an agent's answer.
        LINE_READ = "line_read", "LINE read mark"
        API_PULL = "api_pull", "/messages pull"

    class Kind(models.TextChoices):
        TEXT = "text", "text"
        IMAGE = "image", "image"
        VIDEO = "video", "video"
        AUDIO = "audio", "audio"
        FILE = "file", "file"
        STICKER = "sticker", "sticker"
        LOCATION = "location", "location"
        OTHER = "other", "other"
        NOTICE = "notice", "status notice"
        END = "end", "end of chat"
        CLOSE = "close", "close the chat (action)"
        UNSEND = "unsend", "remove a message (action)"
        READ = "read", "show the user's messages as read (action)"

    class Status(models.TextChoices):
        PENDING = "pending", "waiting to be delivered"
        SENT = "sent", "delivered"
        FAILED = "failed", "failed for good"
        CANCELLED = "cancelled", "cancelled"

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    direction = models.CharField(max_length=8, choices=Direction.choices)
    route = models.CharField(max_length=12, choices=Route.choices)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.TEXT)
    body = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    leased_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True)
    # Set when an attempt may have reached the vendor but its outcome was never recorded
    # (timeout, or the worker died): the next attempt checks before sending again.
    uncertain = models.BooleanField(default=False)
    last_error = models.TextField(blank=True)
    # Generated once and reused on every retry: LINE's X-Line-Retry-Key, LiveChat's custom_id.
    retry_key = models.UUIDField(default=uuid.uuid4, editable=False)

    source_event_id = models.CharField(max_length=64, blank=True)
    line_message_id = models.CharField(max_length=64, blank=True, db_index=True)
    livechat_chat_id = models.CharField(max_length=64, blank=True)
    livechat_thread_id = models.CharField(max_length=64, blank=True)
    livechat_event_id = models.CharField(max_length=64, blank=True)
    # When LiveChat says the agent said it (the event's `created_at`): its webhooks keep no
    # order, and what the agent said is queued for the user in this order.
    said_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    # When an operator last put it back in the queue (Retry delivery): DELIVERY_MAX_AGE_SECONDS
    # counts from then, not from when it was said.
    requeued_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # When the attempt that delivered it began: the vendor had it no earlier. (What LiveChat
    # says an agent has seen is a time by LiveChat's clock.)
    attempted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # A /send retried with its Idempotency-Key is queued once (relay.user_said_once).
            models.UniqueConstraint(
                fields=["session", "source_event_id"],
                condition=models.Q(source_event_id__startswith=IDEMPOTENCY_KEY_PREFIX),
                name="msg_api_idempotency_key",
            )
        ]
        indexes = [
            models.Index(fields=["status", "route", "next_attempt_at"], name="msg_due"),
            models.Index(fields=["session", "route", "status"], name="msg_mailbox"),
        ]

    def __str__(self) -> str:
        return f"{self.get_direction_display()} {self.kind} #{self.pk} ({self.status})"

    @property
    def custom_id(self) -> str:
        return f"bridge-{self.retry_key}"


# The outcome of a LINE `unsend` that came before its message (LINE keeps no order between
# deliveries): kept so that the message, when it comes, is not relayed.
UNSEND_BEFORE_MESSAGE = "unsend: its message not seen yet"
# The outcome of a LiveChat event for a chat no session has (yet): a bot's greeting can come
# before the bridge has recorded the chat it just started. Applied once the chat is recorded.
UNKNOWN_CHAT = "unknown chat"
# The outcome of a LiveChat `chat_deactivated` for a thread that is not the session's: an earlier
# thread's, retried late, or the end of a thread LiveChat has just opened for a start or resume
# whose answer is still on its way. Applied if that thread is recorded after all.
OTHER_THREAD_END = "old thread"


class InboundEvent(models.Model):
    """A vendor event we have accepted, once per vendor id, so that a redelivery is recognised
    and ignored.

    A LINE webhook only stores its events here (the inbox) and answers; the delivery worker then
    applies each, oldest first, and sets `applied_at`. LiveChat's are applied as they arrive."""

    class Source(models.TextChoices):
        LINE = "line", "LINE"
        LIVECHAT = "livechat", "LiveChat"
        LIVECHAT_LEGACY = "livechat_v2", "LiveChat (legacy v2)"

    source = models.CharField(max_length=12, choices=Source.choices)
    event_id = models.CharField(max_length=128)
    event_type = models.CharField(max_length=64, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    # What the bridge did with it: "relayed", or why it was only recorded.
    outcome = models.CharField(max_length=64, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    # None while it waits in the inbox for the worker.
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["source", "event_id"], name="inbound_event_unique")
        ]
        indexes = [
            models.Index(
                fields=["id"], condition=models.Q(applied_at__isnull=True), name="inbound_pending"
            ),
            models.Index(
                fields=["event_type"],
                condition=models.Q(outcome=UNSEND_BEFORE_MESSAGE),
                name="inbound_early_unsend",
            ),
            models.Index(
                fields=["received_at"],
                condition=models.Q(outcome=UNKNOWN_CHAT),
                name="inbound_unknown_chat",
            ),
            models.Index(
                fields=["received_at"],
                condition=models.Q(outcome=OTHER_THREAD_END),
                name="inbound_other_thread_end",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.event_type} {self.event_id}"


class LiveChatCredential(models.Model):
    """The agent OAuth tokens. The refresh token changes on every refresh, so the database, not an
    environment variable, is where the current one lives (one row)."""

    access_token = models.TextField(blank=True)
    access_token_expires_at = models.DateTimeField(null=True, blank=True)
    refresh_token = models.TextField(blank=True)
    # The last refresh token LiveChat refused (revoked, or spent elsewhere), as a digest with the
    # app's id (tokens.grant_fingerprint): it is not offered again, so the bridge waits for a new
    # one instead of asking at every delivery attempt.
    refused_grant = models.CharField(max_length=64, blank=True)
    account_id = models.CharField(max_length=64, blank=True)
    organization_id = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"LiveChat credentials (account {self.account_id or 'unknown'})"
