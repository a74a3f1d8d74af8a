"""What the bridge itself tells a user, in their language (Japanese unless LINE says otherwise).

Every text can be replaced, and languages added, with BRIDGE_NOTICE_TEXTS (JSON):
`{"ended": {"ja": "...", "en": "...", "ko": "..."}}`."""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)

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
    "transferred_position": {
        "ja": "別の担当者におつなぎしています。現在{position}番目です。",
        "en": "We are transferring you to another agent. You are number {position} in the queue.",
    },
    "greeting": {
        "ja": "友だち追加ありがとうございます。メッセージを送ると担当者につながります。",
        "en": "Thanks for adding us. Send a message to reach our team.",
    },
}


def _code(language: str) -> str:
    return (language or "").strip().lower().replace("_", "-")


def _candidates(language: str) -> list[str]:
    """Languages to try, best first: `zh-tw`, then `zh`, then English for a language we have no
    text in; the default language when LINE did not say (no profile, or a /init client)."""
    code = _code(language)
    if not code:
        default = _code(settings.BRIDGE_DEFAULT_LANGUAGE)
        return [default, default.split("-")[0], "ja"]
    return [code, code.split("-")[0], "en", "ja"]


def notice_text(key: str, language: str = "", **values: object) -> str:
    """The notice `key` in the user's language, the operator's text before the built-in one. A
    broken override (an unknown `{placeholder}`) falls back rather than losing the notice."""
    overrides = settings.BRIDGE_NOTICE_TEXTS.get(key) or {}
    overrides = {_code(lang): text for lang, text in overrides.items() if isinstance(text, str)}
    defaults = DEFAULT_TEXTS.get(key, {})
    for lang in _candidates(language):
        for source in (overrides, defaults):
            template = source.get(lang)
            if not template:
                continue
            try:
                return template.format(**values)
            except (KeyError, IndexError, ValueError) as exc:
                logger.warning("notice %s (%s) cannot be filled in: %r", key, lang, exc)
    return ""
