"""The Customer Chat Web API, spoken as one LINE user's LiveChat customer."""

from __future__ import annotations

from typing import Any, Protocol

from django.conf import settings

from . import http
from .errors import AuthenticationError, MisdirectedRequest
from .tokens import region_of


class CustomerCredentials(Protocol):
    def token(self) -> str: ...

    def renew(self) -> str: ...


class CustomerChatAPI:
    def __init__(self, credentials: CustomerCredentials) -> None:
        self.credentials = credentials

    def call(self, method: str, body: dict[str, Any] | None = None, **post_kwargs: Any) -> Any:
        """Call one method: a refused token is renewed once, a region redirect followed once."""
        url = (
            f"{settings.LIVECHAT_API_BASE_URL.rstrip('/')}/v{settings.LIVECHAT_API_VERSION}"
            f"/customer/action/{method}"
        )
        params = {"organization_id": settings.LIVECHAT_ORGANIZATION_ID}
        token = self.credentials.token()
        region = region_of(token)
        renewed = redirected = False
        while True:
            headers = {"Authorization": f"Bearer {token}"}
            if region:
                headers["X-Region"] = region
            try:
                if post_kwargs:
                    return http.post(url, params=params, headers=headers, **post_kwargs)
                return http.post(url, json=body or {}, params=params, headers=headers)
            except AuthenticationError:
                if renewed:
                    raise
                renewed = True
                token = self.credentials.renew()
                region = region_of(token)
            except MisdirectedRequest as exc:
                if redirected or not exc.data.get("region"):
                    raise
                redirected = True
                region = str(exc.data["region"])

    def start_chat(
        self,
        *,
        events: list[dict[str, Any]],
        group_id: int | None = None,
        properties: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        chat: dict[str, Any] = {"thread": {"events": events}}
        if group_id is not None:
            chat["access"] = {"group_ids": [group_id]}
        if properties:
            chat["properties"] = properties
        # continuous: messaging mode, so a chat starts even when no agent is online.
        return self.call("start_chat", {"chat": chat, "active": True, "continuous": True})

    def resume_chat(
        self, *, chat_id: str, events: list[dict[str, Any]], group_id: int | None = None
    ) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": chat_id, "thread": {"events": events}}
        if group_id is not None:
            chat["access"] = {"group_ids": [group_id]}
        return self.call("resume_chat", {"chat": chat, "active": True, "continuous": True})

    def send_event(self, *, chat_id: str, event: dict[str, Any]) -> dict[str, Any]:
        return self.call("send_event", {"chat_id": chat_id, "event": event})

    def deactivate_chat(self, *, chat_id: str) -> None:
        self.call("deactivate_chat", {"id": chat_id})

    def get_chat(self, *, chat_id: str, thread_id: str | None = None) -> dict[str, Any]:
        body = {"chat_id": chat_id}
        if thread_id:
            body["thread_id"] = thread_id
        return self.call("get_chat", body)

    def list_chats(self, *, limit: int = 1) -> dict[str, Any]:
        return self.call("list_chats", {"limit": limit})

    def update_customer(self, **fields: Any) -> None:
        self.call("update_customer", {k: v for k, v in fields.items() if v not in (None, "", [])})

    def delete_event(self, *, chat_id: str, thread_id: str, event_id: str) -> None:
        self.call(
            "delete_event", {"chat_id": chat_id, "thread_id": thread_id, "event_id": event_id}
        )


def message_event(text: str, *, custom_id: str) -> dict[str, Any]:
    return {"type": "message", "text": text, "custom_id": custom_id, "recipients": "all"}
