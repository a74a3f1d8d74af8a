"""Delivery to LINE, called by the worker: a user's queued items by push (a fresh follow's
greeting by reply), in batches that are identical on every retry of their retry key."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from .. import media
from ..line import client as line_client
from ..line import errors as line_errors
from ..line.errors import LineError
from ..models import Message

logger = logging.getLogger(__name__)

Kind = Message.Kind


def line_messages_for(message: Message) -> list[dict[str, Any]]:
    """The LINE message objects that carry one queued item to the user. Only what is on the row
    decides it, so that a retry is the identical request LINE's retry key expects."""
    if message.kind == Kind.FILE and message.direction == Message.Direction.TO_USER:
        image = media.line_image(message.payload)
        if image is not None:
            return [image]
    messages = line_client.text_messages(message.body)[: line_client.MAX_MESSAGES_PER_REQUEST]
    quick_reply = line_client.quick_reply(message.payload.get("quick_replies") or ())
    if quick_reply is not None:
        messages[-1]["quickReply"] = quick_reply
    return messages


def push_batch(rows: Sequence[Message]) -> list[Message]:
    """Which of the leased rows go in one push. Fixed at the first attempt and kept on the head
    row, so that every retry with the head's retry key is the identical request LINE expects."""
    head = rows[0]
    if head.payload.get("reply_token"):
        return [head]
    recorded = head.payload.get("push_batch")
    if recorded:
        return [row for row in rows if row.pk in set(recorded)]
    batch: list[Message] = []
    count = 0
    for row in rows:
        if row.payload.get("reply_token"):
            break
        size = len(line_messages_for(row))
        if batch and count + size > line_client.MAX_MESSAGES_PER_REQUEST:
            break
        batch.append(row)
        count += size
    head.payload = {**head.payload, "push_batch": [row.pk for row in batch]}
    Message.objects.filter(pk=head.pk).update(payload=head.payload)
    return batch


# A reply token is valid for a minute from its event; 10 s of that allowed for clocks that differ.
REPLY_TOKEN_TRUSTED_SECONDS = 50


def _reply_token_unexpired(payload: dict[str, Any]) -> bool:
    issued = payload.get("reply_token_at")
    return isinstance(issued, int | float) and time.time() - issued < REPLY_TOKEN_TRUSTED_SECONDS


def deliver_to_user(batch: Sequence[Message]) -> None:
    """Push (or, for a fresh follow, reply) a batch of queued items to one LINE user."""
    head = batch[0]
    per_row = [line_messages_for(row) for row in batch]
    messages = [obj for row_messages in per_row for obj in row_messages]
    reply_token = head.payload.get("reply_token")
    if reply_token:
        try:
            line_client.reply(reply_token, messages)
            return
        except LineError as exc:
            if exc.retryable:
                raise
            if head.uncertain and _reply_token_unexpired(head.payload):
                # Refused while it was still valid, so it was used: by the reply whose answer was
                # lost (a reply takes no retry key). The user has the greeting; a push would
                # double it.
                logger.info("reply token already used by an unanswered reply message=%s", head.pk)
                return
            # The token expired (LINE answers the same): the greeting matters more than the quota.
    try:
        result = line_client.push(head.session.line_id, messages, retry_key=str(head.retry_key))
    except LineError as exc:
        if exc.retryable or len(batch) == 1:
            raise
        # LINE refused the batch, which it never accepted: find the culprit by sending the head
        # alone next, so one bad message does not take the others down with it.
        head.payload = {**head.payload, "push_batch": [head.pk]}
        Message.objects.filter(pk=head.pk).update(payload=head.payload)
        raise line_errors.RetryableError(f"batch refused, retrying one by one: {exc}") from exc
    # One row may have become several message objects (a split text): each keeps its first id.
    sent = iter(result.sent_message_ids)
    for row, row_messages in zip(batch, per_row, strict=True):
        ids = [message_id for _, message_id in zip(row_messages, sent, strict=False)]
        if ids:
            row.line_message_id = ids[0]


def deliver_read_mark(batch: Sequence[Message]) -> None:
    """Show the user's messages as read in LINE. The newest mark covers the older ones queued
    with it (each up to an earlier message), so one call carries them all."""
    line_client.mark_as_read(batch[-1].payload["markAsReadToken"])
