"""The Customer Chat Web API, spoken as one LINE user's LiveChat customer."""

from __future__ import annotations

import re
from typing import Any, Protocol

from django.conf import settings

from . import http
from .errors import LiveChatError
from .tokens import auth_headers


class CustomerCredentials(Protocol):
    def token(self) -> str: ...

    def renew(self) -> str: ...


class CustomerChatAPI:
    def __init__(self, credentials: CustomerCredentials) -> None:
        self.credentials = credentials

    def call(self, method: str, body: dict[str, Any] | None = None, **post_kwargs: Any) -> Any:
        """Call one method: a refused token is renewed once, a region redirect followed once."""

        def headers_for(renew: bool) -> dict[str, str]:
            token = self.credentials.renew() if renew else self.credentials.token()
            return auth_headers(f"Bearer {token}", token)

        return http.call_action(
            "customer",
            method,
            headers_for=headers_for,
            params={"organization_id": settings.LIVECHAT_ORGANIZATION_ID},
            **(post_kwargs or {"json": body or {}}),
        )

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

    def upload_file(self, *, name: str, data: bytes, content_type: str) -> str:
        """Upload a file for a `file` event; returns its CDN URL (which expires in 24 h unless an
        event uses it, so an upload that is never sent costs nothing)."""
        # Bytes, not a file object: a renewed token or a region redirect posts the same body again.
        answer = self.call("upload_file", files={"file": (name, data, content_type)})
        url = answer.get("url") if isinstance(answer, dict) else None
        if not isinstance(url, str) or not url:
            raise LiveChatError("upload_file answered without a url")
        return url

    def get_form(self, *, group_id: int, form_type: str = "prechat") -> dict[str, Any]:
        return self.call("get_form", {"group_id": group_id, "type": form_type})


def message_event(text: str, *, custom_id: str) -> dict[str, Any]:
    return {"type": "message", "text": text, "custom_id": custom_id, "recipients": "all"}


def file_event(url: str, *, custom_id: str) -> dict[str, Any]:
    return {"type": "file", "url": url, "custom_id": custom_id}


# --- pre-chat forms ---------------------------------------------------------------------------

# Field types whose answer is free text; choices (radio, select, checkbox, group_chooser) and
# decorations (header, title, information) are left out, as we cannot answer them for the user.
TEXT_FIELD_TYPES = frozenset({"name", "email", "question", "textarea"})
NAME_LABEL = re.compile(r"^\W*(your\s+|full\s+)?name\b|名前|氏名", re.IGNORECASE)
EMAIL_LABEL = re.compile(r"e-?mail|メール", re.IGNORECASE)
LINE_LABEL = re.compile(r"\bline\b", re.IGNORECASE)


def _normalized(label: str) -> str:
    # "Contact.LINE_ID__c" and "LINE ID" compare equal: Salesforce-style keys from /init's
    # prechatEntities against the labels of a LiveChat form.
    label = label.rsplit(".", 1)[-1].removesuffix("__c").removesuffix("__C")
    return re.sub(r"[\W_]+", "", label).lower()


def filled_prechat_form(
    form: dict[str, Any],
    *,
    name: str,
    line_id: str,
    answers: dict[str, str] | None = None,
    custom_id: str = "",
) -> dict[str, Any] | None:
    """The `filled_form` event for a group's pre-chat form, answered with what we know of the
    user: the name for name fields, `answers` (label -> value) where a label matches, the LINE
    user id where a label speaks of LINE. None when the form has no field we can answer."""
    by_label = {_normalized(key): str(value) for key, value in (answers or {}).items()}
    fields = []
    for field in form.get("fields") or []:
        if not isinstance(field, dict) or field.get("type") not in TEXT_FIELD_TYPES:
            continue
        label = str(field.get("label") or "")
        answer = by_label.get(_normalized(label)) if label else None
        if answer is None:
            if field["type"] == "name" or (field["type"] != "email" and NAME_LABEL.search(label)):
                answer = name
            elif field["type"] == "email" or EMAIL_LABEL.search(label):
                answer = next((v for k, v in by_label.items() if EMAIL_LABEL.search(k)), "")
            elif LINE_LABEL.search(label):
                answer = line_id
        fields.append(
            {
                "type": field["type"],
                "id": str(field.get("id", "")),
                "label": label,
                "answer": answer or "",
            }
        )
    if not fields or not form.get("id"):
        return None
    event: dict[str, Any] = {"type": "filled_form", "form_id": str(form["id"]), "fields": fields}
    if custom_id:
        event["custom_id"] = custom_id
    return event
