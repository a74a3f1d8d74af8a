"""Connecting the bridge to a LiveChat license: the agent OAuth tokens come from an
authorization-code grant (the admin connect page, or a code pasted into `livechat_connect`) or from
a refresh token an operator already has. Either way they land in the one LiveChatCredential row,
where the refresh token goes on rotating."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction

from sessions_app.models import LiveChatCredential

from .configuration_api import AgentOAuthToken, ConfigurationAPI
from .errors import AuthenticationError, LiveChatError, NotConfigured, PermanentError
from .tokens import (
    agent_access_token,
    client_settings_missing,
    missing_settings,
    store_agent_tokens,
    token_grant,
)

# Minting customer tokens needs this scope, and only a license administrator can grant it.
CUSTOMER_SCOPE = "customers:own"


def new_state() -> str:
    """An unguessable value tying the callback to the browser session that started the flow."""
    return secrets.token_urlsafe(32)


def states_match(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and secrets.compare_digest(str(expected), str(given))


def authorize_url(*, redirect_uri: str, state: str) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.LIVECHAT_CLIENT_ID,
            "redirect_uri": redirect_uri,
            "state": state,
        }
    )
    return f"{settings.LIVECHAT_ACCOUNTS_BASE_URL.rstrip('/')}/?{query}"


@dataclass(frozen=True)
class Connection:
    """What an operator needs to see after a grant: who we are connected as, and what is off."""

    account_id: str
    organization_id: str
    access_token_expires_at: datetime | None
    warnings: list[str] = field(default_factory=list)


def exchange_code(*, code: str, redirect_uri: str) -> Connection:
    """Trade an authorization code for tokens and keep them."""
    return _grant(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
        }
    )


def connect_with_refresh_token(refresh_token: str) -> Connection:
    """Prove a refresh token works by using it, and keep the one that replaces it.

    The token is stored only after LiveChat accepted it, so a mistyped token never replaces a
    working one."""
    return _grant({"grant_type": "refresh_token", "refresh_token": refresh_token})


def _grant(fields: dict[str, str]) -> Connection:
    missing = client_settings_missing()
    if missing:
        raise NotConfigured(f"LiveChat is not configured: set {', '.join(missing)}")
    answer = token_grant(fields)
    if not isinstance(answer, dict) or not answer.get("access_token"):
        raise PermanentError("the accounts service answered without an access token")
    # The HTTP call stays outside the transaction: only the write is locked, so a delivery
    # worker refreshing at the same moment waits for milliseconds, not for LiveChat.
    with transaction.atomic():
        credential = LiveChatCredential.objects.select_for_update().order_by("pk").first()
        if credential is None:
            credential = LiveChatCredential()
        store_agent_tokens(credential, answer)
    return Connection(
        account_id=credential.account_id,
        organization_id=credential.organization_id,
        access_token_expires_at=credential.access_token_expires_at,
        warnings=_grant_warnings(credential, scope=answer.get("scope")),
    )


def _grant_warnings(credential: LiveChatCredential, *, scope: object) -> list[str]:
    warnings = []
    mismatch = organization_mismatch(credential)
    if mismatch:
        warnings.append(mismatch)
    if isinstance(scope, str) and CUSTOMER_SCOPE not in scope.replace(",", " ").split():
        warnings.append(
            f"the token lacks the `{CUSTOMER_SCOPE}` scope, so it cannot mint customer tokens: "
            "add the scope to the app in the Developer Console and connect again with a license "
            "administrator's account"
        )
    return warnings


def organization_mismatch(credential: LiveChatCredential) -> str:
    """A warning when the connected account belongs to another organization than the one the
    bridge sends with every Customer Chat call (those calls would all be refused)."""
    configured = settings.LIVECHAT_ORGANIZATION_ID
    if credential.organization_id and configured and credential.organization_id != configured:
        return (
            f"the token belongs to organization {credential.organization_id}, but "
            f"LIVECHAT_ORGANIZATION_ID is {configured}: chats will fail until they agree"
        )
    if credential.organization_id and not configured:
        return f"LIVECHAT_ORGANIZATION_ID is not set: set it to {credential.organization_id}"
    return ""


@dataclass(frozen=True)
class Status:
    ok: bool
    lines: list[str]
    problems: list[str]


def connection_status() -> Status:
    """Can the bridge mint customer tokens right now?

    It checks the agent token for real without creating anything: minting a customer token would
    create a customer on the license each time, so instead the token is refreshed if it is due and
    used for one read-only Configuration API call (list_agents). The accounts service's token-info
    endpoint would be cheaper still, but it is not in our reference, so it is not relied on."""
    missing = missing_settings()
    if missing:
        return Status(
            ok=False,
            lines=[],
            problems=[
                f"not configured: set {', '.join(missing)} "
                "(or connect with `livechat_connect` or /livechat/connect)"
            ],
        )
    try:
        agent_access_token()
    except NotConfigured as exc:  # refused token or app: the message says what to fix
        return Status(ok=False, lines=[], problems=[str(exc)])
    except LiveChatError as exc:
        if exc.retryable:
            problem = f"LiveChat's accounts service could not be reached: {exc}"
        else:
            problem = f"the accounts service refused the bridge ({exc})"
        return Status(ok=False, lines=[], problems=[problem])
    lines: list[str] = []
    problems: list[str] = []
    try:
        ConfigurationAPI(credentials=AgentOAuthToken()).list_agents()
        lines.append("agent token accepted by the Configuration API (list_agents)")
    except AuthenticationError as exc:
        problems.append(f"the agent token is refused even after a refresh ({exc}): connect again")
    except PermanentError as exc:
        if exc.error_type != "authorization":
            problems.append(f"the agent token could not be checked: {exc}")
        else:
            # Authenticated but without the agents scope, which the bridge does not need.
            lines.append("agent token accepted (the app has no agents scope, which is fine)")
    except NotConfigured as exc:
        # The token was refused and so was the refresh that followed: LiveChat was reached, and
        # the message says what to do (not "could not be reached", which sent operators looking
        # at the network).
        problems.append(str(exc))
    except LiveChatError as exc:
        problems.append(f"LiveChat could not be reached to check the token: {exc}")
    credential = LiveChatCredential.objects.order_by("pk").first()
    if credential is not None:
        expires = credential.access_token_expires_at
        until = f"{expires:%Y-%m-%d %H:%M:%S %Z}" if expires else "an unknown time"
        lines.insert(
            0,
            f"account {credential.account_id or 'unknown'}, organization "
            f"{credential.organization_id or 'unknown'}, agent token valid until {until}",
        )
        mismatch = organization_mismatch(credential)
        if mismatch:
            problems.append(mismatch)
    return Status(ok=not problems, lines=lines, problems=problems)
