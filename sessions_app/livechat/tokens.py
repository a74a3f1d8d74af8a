"""Agent and customer tokens.

The agent token comes from the rotating refresh token kept in the database. Each LINE user is a
LiveChat customer whose token is minted with the agent token and cached on their session."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from sessions_app.models import ChatSession, LiveChatCredential

from . import http
from .errors import AppRefused, AuthenticationError, Disconnected, NotConfigured, PermanentError

# Renew ahead of expiry so that a token never dies between our check and LiveChat's.
AGENT_TOKEN_MARGIN = timedelta(minutes=5)
CUSTOMER_TOKEN_MARGIN = timedelta(minutes=10)


def client_settings_missing() -> list[str]:
    """The settings without which no token grant can even be asked for."""
    names = ("LIVECHAT_CLIENT_ID", "LIVECHAT_CLIENT_SECRET")
    return [name for name in names if not getattr(settings, name)]


def missing_settings(*, read_database: bool = True) -> list[str]:
    """The LiveChat settings without which no chat can be started. Without `read_database` (it
    is not migrated yet) a refresh token stored by a connect is taken to be absent."""
    missing = client_settings_missing()
    if not settings.LIVECHAT_ORGANIZATION_ID:
        missing.append("LIVECHAT_ORGANIZATION_ID")
    stored = _stored_refresh_token() if read_database else ""
    if not settings.LIVECHAT_REFRESH_TOKEN and not stored:
        missing.append("LIVECHAT_REFRESH_TOKEN")
    return missing


def _stored_refresh_token() -> str:
    credential = LiveChatCredential.objects.order_by("pk").first()
    return credential.refresh_token if credential else ""


def accounts_url(path: str) -> str:
    return settings.LIVECHAT_ACCOUNTS_BASE_URL.rstrip("/") + path


def region_of(token: str) -> str:
    """LiveChat tokens start with their region (`dal:`, `fra:`)."""
    prefix, sep, _ = token.partition(":")
    return prefix if sep else ""


def auth_headers(authorization: str, token: str) -> dict[str, str]:
    """The Authorization header, and X-Region when the token names its region: naming it saves
    a misdirected round trip."""
    headers = {"Authorization": authorization}
    region = region_of(token)
    if region:
        headers["X-Region"] = region
    return headers


def agent_access_token(*, force_refresh: bool = False) -> str:
    """A valid agent access token, refreshing (and storing the rotated refresh token) when due."""
    missing = missing_settings()
    if missing:
        raise NotConfigured(f"LiveChat is not configured: set {', '.join(missing)}")
    credential = LiveChatCredential.objects.order_by("pk").first()
    if credential and not force_refresh and _fresh(credential):
        return credential.access_token
    stale_token = credential.access_token if credential else ""
    if credential is None:
        # The row must exist before it can be locked: with none, concurrent first callers would
        # each insert one and spend the same single-use seed token (all but one then refused).
        try:
            with transaction.atomic():
                LiveChatCredential.objects.get_or_create(
                    pk=1, defaults={"refresh_token": settings.LIVECHAT_REFRESH_TOKEN}
                )
        except IntegrityError:
            pass
    # One refresher at a time: the refresh token is single-use, so two concurrent refreshes with
    # the same one would leave one process holding a revoked token.
    with transaction.atomic():
        credential = LiveChatCredential.objects.select_for_update().order_by("pk").first()
        if _fresh(credential) and credential.access_token != stale_token:
            return credential.access_token  # another process refreshed while we waited
        credential.refresh_token = refresh_token_to_offer(credential)
        if refused(credential):
            raise Disconnected(DISCONNECTED)
        try:
            answer = token_grant(
                {"grant_type": "refresh_token", "refresh_token": credential.refresh_token}
            )
        except PermanentError as exc:
            if exc.error_type != "invalid_grant":
                # The app's id or secret, most likely: an operator's fix, which messages wait for.
                # Nothing is recorded, so the next attempt asks again.
                raise AppRefused(f"{APP_REFUSED} ({exc})") from exc
            # Kept (the transaction commits) so that no other attempt spends a call on it. The
            # access token was due or refused too: no longer offered, but kept, since it also
            # says a refresh once worked (see refresh_token_to_offer).
            credential.refused_grant = grant_fingerprint(credential.refresh_token)
            credential.access_token_expires_at = None
            credential.save()
            refusal = exc
        else:
            store_agent_tokens(credential, answer)
            return credential.access_token
    raise Disconnected(f"{DISCONNECTED} ({refusal})") from refusal


DISCONNECTED = (
    "LiveChat refused the bridge's refresh token (revoked, or spent by another deployment), so "
    "the bridge needs connecting again (/livechat/connect or manage.py livechat_connect); "
    "messages wait until then"
)
APP_REFUSED = (
    "LiveChat's accounts service refused the bridge's app: check LIVECHAT_CLIENT_ID and "
    "LIVECHAT_CLIENT_SECRET; messages wait until then"
)


def refresh_token_to_offer(credential: LiveChatCredential) -> str:
    """The environment's seed when none is stored, and, until a refresh has worked, over the
    stored one (an operator may have replaced a mistyped seed). After a refresh has worked, a new
    token comes only through livechat_connect or /livechat/connect."""
    if settings.LIVECHAT_REFRESH_TOKEN and not (
        credential.access_token and credential.refresh_token
    ):
        return settings.LIVECHAT_REFRESH_TOKEN
    return credential.refresh_token


def grant_fingerprint(refresh_token: str) -> str:
    """What a refusal is remembered by: the token together with the app it was offered as (an
    `invalid_grant` may mean "issued to another client", and a corrected LIVECHAT_CLIENT_ID
    deserves a new try), as a digest, so that no second copy of the token is kept."""
    material = f"{settings.LIVECHAT_CLIENT_ID}\0{refresh_token}".encode()
    return hashlib.sha256(material).hexdigest()


def refused(credential: LiveChatCredential) -> bool:
    """Is the refresh token the bridge would offer one LiveChat has already refused this app?"""
    token = refresh_token_to_offer(credential)
    return bool(token and credential.refused_grant) and (
        grant_fingerprint(token) == credential.refused_grant
    )


def token_grant(fields: dict[str, str]) -> dict:
    """Ask the accounts service for agent tokens, as the bridge's Developer Console app."""
    return http.post(
        accounts_url("/v2/token"),
        data={
            **fields,
            "client_id": settings.LIVECHAT_CLIENT_ID,
            "client_secret": settings.LIVECHAT_CLIENT_SECRET,
        },
    )


def store_agent_tokens(credential: LiveChatCredential, answer: dict) -> None:
    """Keep what the accounts service answered to a token grant."""
    credential.access_token = answer["access_token"]
    credential.refresh_token = answer.get("refresh_token") or credential.refresh_token
    credential.refused_grant = ""
    credential.access_token_expires_at = timezone.now() + timedelta(
        seconds=int(answer.get("expires_in", 28800))
    )
    credential.account_id = answer.get("account_id", credential.account_id) or ""
    credential.organization_id = answer.get("organization_id", credential.organization_id) or ""
    credential.save()


def _fresh(credential: LiveChatCredential) -> bool:
    expires = credential.access_token_expires_at
    return bool(
        credential.access_token and expires and expires > timezone.now() + AGENT_TOKEN_MARGIN
    )


@dataclass(frozen=True)
class CustomerToken:
    access_token: str
    entity_id: str
    expires_at: datetime


def mint_customer_token(entity_id: str | None) -> CustomerToken:
    """A customer token for an existing customer, or for a new one when `entity_id` is None."""
    body = {
        "grant_type": "agent_token",
        "client_id": settings.LIVECHAT_CLIENT_ID,
        "response_type": "token",
    }
    if entity_id:
        body["entity_id"] = entity_id
    for attempt in (1, 2):
        headers = {"Authorization": f"Bearer {agent_access_token(force_refresh=attempt == 2)}"}
        try:
            answer = http.post(accounts_url("/v2/customer/token"), json=body, headers=headers)
            break
        except AuthenticationError:
            if attempt == 2:
                raise
    return CustomerToken(
        access_token=answer["access_token"],
        entity_id=answer["entity_id"],
        expires_at=timezone.now() + timedelta(seconds=int(answer.get("expires_in", 28800))),
    )


class SessionCustomer:
    """The LiveChat customer behind one chat session: its token, minted and cached on the row."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session

    @property
    def created(self) -> bool:
        return bool(self.session.customer_id)

    def token(self) -> str:
        session = self.session
        expires = session.customer_token_expires_at
        if session.customer_token and expires and expires > timezone.now() + CUSTOMER_TOKEN_MARGIN:
            return session.customer_token
        return self.renew()

    def renew(self) -> str:
        session = self.session
        new_customer = not session.customer_id
        minted = mint_customer_token(session.customer_id or None)
        fields = {
            "customer_id": minted.entity_id,
            "customer_token": minted.access_token,
            "customer_token_expires_at": minted.expires_at,
        }
        # Saved at once: a customer created and then forgotten would split the user's history.
        rows = ChatSession.objects.filter(pk=session.pk)
        if new_customer:
            # Only the first customer made for a user is kept. A /send while /init runs, or two
            # /init at once, each make one; if both were kept, the user's chat would belong to
            # one customer and the session to the other, and every later message would fail.
            rows = rows.filter(customer_id="")
        if rows.update(**fields, updated_at=timezone.now()):
            for name, value in fields.items():
                setattr(session, name, value)
            return minted.access_token
        # Another request made the user's customer first: this one is left without a chat.
        session.refresh_from_db(fields=[*fields, "chat_id", "thread_id"])
        return self.token()
