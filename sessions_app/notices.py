"""What the bridge itself tells a user, in their language (Japanese unless LINE says otherwise)."""

from __future__ import annotations

from django.conf import settings

# The Japanese texts of `connected`, `unavailable` and `ended` are the earlier bridge's contract.
DEFAULT_TEXTS: dict[str, dict[str, str]] = {
    "connected": {"ja": "接続しました。", "en": "Connected."},
    "unavailable": {"ja": "ただいま接続できません。", "en": "We cannot connect you right now."},
    "ended": {"ja": "接続が終了しました。", "en": "The chat has ended."},
    "queued": {
        "ja": "担当者におつなぎしています。しばらくお待ちください。",
        "en": "We are connecting you to an agent. Please wait a moment.",
    },
    "queued_position": {
        "ja": "担当者におつなぎしています。現在{position}番目です。",
        "en": "We are connecting you to an agent. You are number {position} in the queue.",
    },
    "agent_joined": {"ja": "{name}が対応いたします。", "en": "{name} has joined the chat."},
    "transferred": {
        "ja": "別の担当者におつなぎしています。",
        "en": "We are transferring you to another agent.",
    },
    "greeting": {
        "ja": "友だち追加ありがとうございます。メッセージを送ると担当者につながります。",
        "en": "Thanks for adding us. Send a message to reach our team.",
    },
}


def language_of(code: str) -> str:
    """The notice language for a LINE profile language code such as `ja` or `en-US`."""
    base = (code or "").split("-")[0].lower()
    if base in {"ja", "en"}:
        return base
    return settings.BRIDGE_DEFAULT_LANGUAGE if code == "" else "en"


def notice_text(key: str, language: str = "", **values: object) -> str:
    lang = language_of(language)
    texts = {**DEFAULT_TEXTS[key], **settings.BRIDGE_NOTICE_TEXTS.get(key, {})}
    template = texts.get(lang) or texts["ja"]
    return template.format(**values)
