"""The Configuration API (webhooks, agents), spoken by the bridge's operators through management
commands and by `livechat_connect --status`.

It accepts two kinds of credentials: a Personal Access Token (Basic) when one is configured,
because it never expires and survives a reconnect, and otherwise the agent OAuth token the bridge
already keeps for minting customer tokens (Bearer)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

from . import http
from .tokens import agent_access_token, auth_headers


class ConfigurationCredentials(Protocol):
    @property
    def description(self) -> str: ...

    @property
    def renewable(self) -> bool: ...

    def headers(self, *, renew: bool = False) -> dict[str, str]:
        """Authorization (and X-Region) headers; `renew` asks for a fresh token after a refusal."""
        ...


@dataclass(frozen=True)
class PersonalAccessToken:
    account_id: str
    token: str

    @property
    def description(self) -> str:
        return f"the personal access token of account {self.account_id}"

    @property
    def renewable(self) -> bool:
        return False  # a refused PAT stays refused: retrying would only be billed

    def headers(self, *, renew: bool = False) -> dict[str, str]:
        pair = base64.b64encode(f"{self.account_id}:{self.token}".encode()).decode()
        return auth_headers(f"Basic {pair}", self.token)


class AgentOAuthToken:
    description = "the stored agent OAuth token"
    renewable = True

    def headers(self, *, renew: bool = False) -> dict[str, str]:
        # A token can be revoked before its expiry (the 25-token cap, a reconnect elsewhere), so a
        # refusal is worth one forced refresh.
        token = agent_access_token(force_refresh=renew)
        return auth_headers(f"Bearer {token}", token)


def default_credentials() -> ConfigurationCredentials:
    """The PAT when both halves are configured, otherwise the stored agent OAuth token."""
    if settings.LIVECHAT_PAT and settings.LIVECHAT_ACCOUNT_ID:
        return PersonalAccessToken(
            account_id=settings.LIVECHAT_ACCOUNT_ID, token=settings.LIVECHAT_PAT
        )
    return AgentOAuthToken()


class ConfigurationAPI:
    def __init__(self, *, credentials: ConfigurationCredentials | None = None) -> None:
        self.credentials = credentials or default_credentials()

    def call(self, method: str, body: dict[str, Any] | None = None) -> Any:
        """Call one method: a refused token is renewed once, a region redirect followed once."""
        return http.call_action(
            "configuration",
            method,
            headers_for=lambda renew: self.credentials.headers(renew=renew),
            renewable=self.credentials.renewable,
            json=body or {},
        )

    # --- webhooks -------------------------------------------------------------------------

    def register_webhook(
        self,
        *,
        url: str,
        action: str,
        secret_key: str,
        owner_client_id: str,
        webhook_type: str = "license",
        description: str = "",
        filters: dict[str, Any] | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "url": url,
            "action": action,
            "secret_key": secret_key,
            "owner_client_id": owner_client_id,
            "type": webhook_type,
        }
        if description:
            body["description"] = description
        if filters:
            body["filters"] = filters
        return str(self.call("register_webhook", body)["id"])

    def list_webhooks(self, *, owner_client_id: str) -> list[dict[str, Any]]:
        answer = self.call("list_webhooks", {"owner_client_id": owner_client_id})
        return list(answer) if isinstance(answer, list) else []

    def unregister_webhook(self, *, webhook_id: str, owner_client_id: str) -> None:
        self.call("unregister_webhook", {"id": webhook_id, "owner_client_id": owner_client_id})

    # --- agents ---------------------------------------------------------------------------

    def list_agents(self, *, fields: list[str] | None = None) -> list[dict[str, Any]]:
        answer = self.call("list_agents", {"fields": fields} if fields else {})
        return list(answer) if isinstance(answer, list) else []

    def create_agent(
        self,
        *,
        agent_id: str,
        name: str,
        role: str | None = None,
        max_chats_count: int | None = None,
        group_ids: list[int] | None = None,
        job_title: str | None = None,
    ) -> str:
        body: dict[str, Any] = {"id": agent_id, "name": name}
        if role:
            body["role"] = role
        if max_chats_count is not None:
            body["max_chats_count"] = max_chats_count
        if group_ids:
            body["groups"] = [{"id": group_id, "priority": "normal"} for group_id in group_ids]
        if job_title:
            body["job_title"] = job_title
        return str(self.call("create_agent", body).get("id", agent_id))

    def delete_agent(self, *, agent_id: str) -> None:
        self.call("delete_agent", {"id": agent_id})
