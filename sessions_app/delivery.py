"""The delivery worker: takes due rows of the outbox, oldest first per mailbox (one session and
route), sends them, and records the outcome.

A row is leased before the network call (compare-and-set on `leased_until`), never locked across
it; a worker that dies mid-send leaves a lease that expires, and the row is taken again with
`uncertain` set so the next attempt checks before sending twice."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.db.models import Case, Exists, F, OuterRef, Q, QuerySet, Value, When
from django.utils import timezone

from . import relay
from .db_pool import release_connection
from .errors import DeliveryError
from .models import InboundEvent, Message
from .request_log import bound_request_id

logger = logging.getLogger(__name__)

Route = Message.Route
Status = Message.Status


@dataclass(frozen=True)
class Channel:
    """How one route's rows are carried: `select` picks which leased rows go in one call (the
    rest are released), `send` makes the call or raises a DeliveryError."""

    send: Callable[[Sequence[Message]], None]
    batch_size: int = 1
    select: Callable[[Sequence[Message]], list[Message]] = lambda rows: list(rows[:1])


CHANNELS: dict[str, Channel] = {
    Route.LIVECHAT: Channel(send=lambda rows: relay.deliver_to_agent(rows[0])),
    Route.LINE_PUSH: Channel(send=relay.deliver_to_user, batch_size=5, select=relay.push_batch),
    Route.LINE_READ: Channel(send=relay.deliver_read_mark, batch_size=10, select=list),
}

WORKER_ROUTES = tuple(CHANNELS)


def _lease_free(now) -> Q:
    return Q(leased_until__isnull=True) | Q(leased_until__lt=now)


def _due(routes: Iterable[str], now: datetime) -> QuerySet[Message]:
    """Pending rows of `routes` whose time has come (held or not)."""
    return Message.objects.filter(
        status=Status.PENDING, route__in=list(routes), next_attempt_at__lte=now
    )


def due_heads(routes: Iterable[str], limit: int) -> list[Message]:
    """The oldest pending row of each mailbox, when it is due and nobody holds it."""
    now = timezone.now()
    older_pending = Message.objects.filter(
        session=OuterRef("session"),
        route=OuterRef("route"),
        status=Status.PENDING,
        id__lt=OuterRef("id"),
    )
    return list(
        _due(routes, now)
        .filter(_lease_free(now))
        .exclude(Exists(older_pending))
        .order_by("next_attempt_at", "id")[:limit]
    )


def lease(head: Message, batch_size: int) -> tuple[str, list[Message]]:
    """Take the head row (and up to batch_size-1 rows queued behind it); ("", []) if another
    worker was first."""
    now = timezone.now()
    token = uuid.uuid4().hex
    taken = (
        # Due again, not only unleased: `head` may have been read before another worker tried the
        # row and scheduled its backoff.
        Message.objects.filter(pk=head.pk, status=Status.PENDING, next_attempt_at__lte=now)
        .filter(_lease_free(now))
        .update(
            leased_until=now + timedelta(seconds=settings.DELIVERY_LEASE_SECONDS),
            lease_token=token,
            attempts=F("attempts") + 1,
            # A lease that expired without an outcome: that attempt may have been delivered.
            uncertain=Case(
                When(leased_until__isnull=False, then=Value(True)), default=F("uncertain")
            ),
        )
    )
    if not taken:
        return "", []
    rows = [Message.objects.select_related("session").get(pk=head.pk)]
    if batch_size > 1:
        # Rows behind a leased head are reachable by no other worker, so no compare-and-set race.
        followers = list(
            Message.objects.filter(
                session_id=head.session_id, route=head.route, status=Status.PENDING, id__gt=head.pk
            )
            .order_by("id")
            .values_list("pk", flat=True)[: batch_size - 1]
        )
        if followers:
            Message.objects.filter(pk__in=followers).update(
                leased_until=now + timedelta(seconds=settings.DELIVERY_LEASE_SECONDS),
                lease_token=token,
                attempts=F("attempts") + 1,
            )
            rows += list(
                Message.objects.select_related("session").filter(pk__in=followers).order_by("id")
            )
    for row in rows[1:]:
        row.session = rows[0].session
    return token, rows


class DatabaseFailedMidSend(DeliveryError):
    """Our database, not the vendor, failed during a send: a Postgres restart, no pooled
    connection when the vendor had answered (db_pool.py gives it back during the call when
    threads outnumber the pool's connections), SQLite's lock. Gone in seconds, so retried;
    and the vendor may have the message already."""

    retryable = True
    uncertain = True


def deliver(rows: Sequence[Message], token: str) -> None:
    """Send leased `rows` (or the batch of them their channel takes) and record the outcome."""
    # Every line logged meanwhile (the vendor's answer, a token refresh) names the message.
    with bound_request_id(f"msg-{rows[0].pk}"):
        _deliver(rows, token)


def _deliver(rows: Sequence[Message], token: str) -> None:
    channel = CHANNELS[rows[0].route]
    try:
        batch = channel.select(rows)
    except Exception:
        logger.exception("choosing a batch failed message=%s", rows[0].pk)
        batch = list(rows[:1])
    _release([row for row in rows if row not in batch], token)
    attempted_at = timezone.now()
    try:
        channel.send(batch)
    except DeliveryError as exc:
        _record_failure(batch, token, exc)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("delivery interrupted by the database message=%s error=%s", batch[0].pk, exc)
        _record_failure(batch, token, DatabaseFailedMidSend(f"{type(exc).__name__}: {exc}"))
    except Exception as exc:  # a bug must park the row with its cause, not kill the worker
        logger.exception("delivery crashed message=%s", batch[0].pk)
        _record_failure(batch, token, exc)
    else:
        now = timezone.now()
        for row in batch:
            Message.objects.filter(pk=row.pk, lease_token=token).update(
                status=Status.SENT,
                sent_at=now,
                attempted_at=attempted_at,
                leased_until=None,
                lease_token="",
                uncertain=False,
                last_error="",
                livechat_chat_id=row.livechat_chat_id,
                livechat_thread_id=row.livechat_thread_id,
                livechat_event_id=row.livechat_event_id,
                line_message_id=row.line_message_id,
            )
        logger.info("delivered route=%s messages=%s", batch[0].route, [r.pk for r in batch])


def _release(rows: Sequence[Message], token: str) -> None:
    """Give back rows leased with a batch they did not fit in; the attempt did not happen."""
    if rows:
        Message.objects.filter(pk__in=[r.pk for r in rows], lease_token=token).update(
            leased_until=None, lease_token="", attempts=F("attempts") - 1
        )


def backoff_seconds(attempts: int) -> float:
    """Exponential, capped, with jitter so that a recovering vendor is not hit all at once."""
    # The exponent is capped: a row may wait through thousands of attempts (LiveChat
    # disconnected for days), and 2.0 * 2**1024 is an OverflowError, not a long delay.
    doublings = min(max(attempts - 1, 0), 32)
    ceiling = min(settings.DELIVERY_BACKOFF_MAX, settings.DELIVERY_BACKOFF_BASE * 2**doublings)
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


def _record_failure(rows: Sequence[Message], token: str, exc: Exception) -> None:
    now = timezone.now()
    retryable = getattr(exc, "retryable", False)
    uncertain = getattr(exc, "uncertain", False)
    head = rows[0]
    queued_at = head.requeued_at or head.created_at
    too_old = (now - queued_at).total_seconds() > settings.DELIVERY_MAX_AGE_SECONDS
    error = f"{type(exc).__name__}: {exc}"[:2000]
    for row in rows:
        query = Message.objects.filter(pk=row.pk, lease_token=token)
        if retryable and not too_old:
            query.update(
                status=Status.PENDING,
                next_attempt_at=now + timedelta(seconds=backoff_seconds(row.attempts)),
                leased_until=None,
                lease_token="",
                last_error=error,
                uncertain=uncertain or row.uncertain,
            )
        else:
            query.update(status=Status.FAILED, leased_until=None, lease_token="", last_error=error)
    log = logger.warning if retryable and not too_old else logger.error
    log(
        "delivery failed route=%s messages=%s retry=%s error=%s",
        head.route,
        [r.pk for r in rows],
        retryable and not too_old,
        error,
    )


def run_once(
    routes: Iterable[str] = WORKER_ROUTES,
    limit: int = 8,
    *,
    intake: bool = True,
    found_work: Callable[[], None] | None = None,
) -> int:
    """Apply what waits in the LINE inbox (when `intake`), then deliver what is due now, one
    mailbox at a time; returns how many events were applied and sends made. `found_work` is
    called before the first send, when there is one to make."""
    done = relay.apply_line_inbox() if intake else 0
    # "Nothing due" is what an idle worker hears twenty times a second: asked this way (on the
    # msg_due index) it costs a sixth of the CPU of building the query that picks the heads.
    if not _due(routes, timezone.now()).exists():
        return done
    # The worker's threads (and other workers) read the same oldest heads at the same moment:
    # each tries them in its own order, from a wider pick, so that they lease different
    # mailboxes instead of losing the same compare-and-set to each other.
    heads = due_heads(routes, limit * 4)
    random.shuffle(heads)
    sent = 0
    for head in heads:
        token, rows = lease(head, CHANNELS[head.route].batch_size)
        if rows:
            if sent == 0 and found_work is not None:
                found_work()  # once this thread holds its first: the others then look for the rest
            deliver(rows, token)
            sent += 1
            if sent == limit:
                break
    return done + sent


def run_until_idle(routes: Iterable[str] = WORKER_ROUTES, timeout: float = 10.0) -> int:
    """Deliver until nothing is due (tests, and the management command's --once)."""
    deadline = time.monotonic() + timeout
    total = 0
    while time.monotonic() < deadline:
        done = run_once(routes)
        total += done
        if not done:
            return total
    return total


def prune_inbound_events(days: int = 7) -> int:
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = InboundEvent.objects.filter(
        received_at__lt=cutoff, applied_at__isnull=False
    ).delete()
    return deleted


def work(stop: threading.Event, *, threads: int | None = None) -> None:
    """The worker's main loop: `threads` loops sending in parallel until `stop` is set.

    Once nothing has been due for a few seconds only the first thread polls the database; the
    others wait until a thread finds something to send (four threads polling every 50 ms kept an
    idle worker at an eighth of a core, all day, and as many queries on the database)."""
    count = threads or settings.DELIVERY_THREADS
    busy, inbox = threading.Event(), InboxTurn()
    workers = [
        threading.Thread(
            target=_loop,
            args=(stop, index == 0, busy, inbox),
            name=f"delivery-{index}",
            daemon=True,
        )
        for index in range(count)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


# Seconds between two sweeps for LiveChat events that lost the race with their chat's recording.
PARKED_SWEEP_INTERVAL = 1.0
# How long a waiting thread sleeps before it looks for itself: the first thread may be held by a
# slow vendor call while other mailboxes have something due.
IDLE_HELPER_WAIT = 1.0
# How long the first thread may go without applying the LINE inbox before another thread does.
INBOX_TAKEOVER_SECONDS = 0.5
# How long the other threads go on polling as the first one does after the last work they saw:
# under steady traffic each wake-up would come a send too late.
HELPER_LINGER_SECONDS = 5.0


class InboxTurn:
    """Which of a worker's threads applies the LINE inbox: one at a time (the others would only
    queue behind its transaction), the first one at each look, and another one only when the first
    has not for INBOX_TAKEOVER_SECONDS. The first may be held by a vendor call that waits for its
    timeout (10 s), which must not hold every LINE user's new messages that long. (Any free thread
    applying it at every look, tried, cost the worker 2.5 times its CPU per relayed message.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def apply(self, first: bool) -> int:
        """Apply the inbox if it is this thread's turn; returns how many events were applied."""
        if not first and time.monotonic() - self._last < INBOX_TAKEOVER_SECONDS:
            return 0
        if not self._lock.acquire(blocking=False):
            return 0
        try:
            return relay.apply_line_inbox()
        finally:
            self._last = time.monotonic()
            self._lock.release()


def _loop(
    stop: threading.Event, housekeeping: bool, busy: threading.Event, inbox: InboxTurn
) -> None:
    next_prune = next_sweep = time.monotonic()
    last_work = -math.inf
    try:
        while not stop.is_set():
            close_old_connections()
            try:
                done = inbox.apply(housekeeping)
                done += run_once(limit=4, intake=False, found_work=busy.set)
                if housekeeping and time.monotonic() >= next_sweep:
                    relay.apply_parked_livechat_events()
                    next_sweep = time.monotonic() + PARKED_SWEEP_INTERVAL
                if housekeeping and time.monotonic() >= next_prune:
                    prune_inbound_events()
                    next_prune = time.monotonic() + 3600
            except Exception:
                # A database that went away must not end the worker: wait and try again.
                logger.exception("delivery loop error")
                connection.close()
                done = 0
                stop.wait(1.0)
            if done:
                last_work = time.monotonic()
            else:
                release_connection()  # the other threads may need it while this one idles
                if housekeeping or time.monotonic() - last_work < HELPER_LINGER_SECONDS:
                    stop.wait(settings.DELIVERY_POLL_INTERVAL)
                else:
                    busy.clear()
                    if busy.wait(IDLE_HELPER_WAIT):
                        last_work = time.monotonic()
    finally:
        if housekeeping:
            busy.set()  # the waiting threads see `stop` now, not a second later
        connection.close()
