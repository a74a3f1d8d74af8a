"""`python manage.py livechat_webhooks register|list|remove`: the LiveChat webhooks the bridge
needs, registered through the Configuration API.

    livechat_webhooks register --url https://bridge.example.com
    livechat_webhooks list
    livechat_webhooks remove --all | remove ID [ID ...]
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from sessions_app.livechat.configuration_api import ConfigurationAPI
from sessions_app.livechat.errors import LiveChatError

# What the relay reacts to. incoming_event is limited to agents' events: the customer's own
# messages (ours, coming back) would only be billed and dropped.
WEBHOOKS: dict[str, dict[str, Any]] = {
    "incoming_event": {"author_type": "agent"},
    "chat_deactivated": {},
    "incoming_chat": {},
    "user_added_to_chat": {},
    "chat_transferred": {},
    "events_marked_as_seen": {},
}
DESCRIPTION = "LINE bridge"


class Command(BaseCommand):
    help = "Register (idempotently), list or remove the bridge's LiveChat webhooks."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)
        register = commands.add_parser(
            "register", help="register the webhooks the bridge needs (skips existing ones)"
        )
        register.add_argument(
            "--url",
            required=True,
            help="the bridge's public base URL, e.g. https://bridge.example.com",
        )
        commands.add_parser("list", help="list this app's webhooks")
        remove = commands.add_parser("remove", help="unregister webhooks")
        remove.add_argument("ids", nargs="*", metavar="ID", help="webhook ids (see `list`)")
        remove.add_argument("--all", action="store_true", help="every webhook of this app")

    def handle(self, *args: Any, command: str, **options: Any) -> None:
        if not settings.LIVECHAT_CLIENT_ID:
            raise CommandError("LIVECHAT_CLIENT_ID is not set: webhooks belong to the app")
        api = ConfigurationAPI()
        if options["verbosity"] >= 2:
            self.stdout.write(f"authenticating with {api.credentials.description}")
        try:
            if command == "register":
                self._register(api, options["url"])
            elif command == "list":
                self._list(api)
            else:
                self._remove(api, options["ids"], every=options["all"])
        except LiveChatError as exc:
            raise CommandError(_explain(exc)) from exc

    def _register(self, api: ConfigurationAPI, base_url: str) -> None:
        secret = settings.LIVECHAT_WEBHOOK_SECRET
        if not secret:
            raise CommandError(
                "LIVECHAT_WEBHOOK_SECRET is not set: the bridge refuses webhooks without it"
            )
        if not base_url.startswith(("https://", "http://")):
            raise CommandError(f"--url must start with https:// (got {base_url!r})")
        path = reverse("livechat-webhook")
        url = base_url.rstrip("/")
        if not url.endswith(path):
            url += path
        owner = settings.LIVECHAT_CLIENT_ID
        existing = [w for w in api.list_webhooks(owner_client_id=owner) if w.get("url") == url]
        for action, filters in WEBHOOKS.items():
            same = [w for w in existing if w.get("action") == action]
            current = [w for w in same if _up_to_date(w, secret=secret, filters=filters)]
            if current:
                self.stdout.write(f"{action}: already registered ({current[0].get('id')})")
                continue
            # Registered for this URL but with an old secret or other filters: the bridge would
            # refuse or mis-handle what it delivers, so it is replaced rather than kept.
            for stale in same:
                api.unregister_webhook(webhook_id=str(stale["id"]), owner_client_id=owner)
                self.stdout.write(f"{action}: removed outdated {stale['id']}")
            webhook_id = api.register_webhook(
                url=url,
                action=action,
                secret_key=secret,
                owner_client_id=owner,
                description=DESCRIPTION,
                filters=filters or None,
            )
            self.stdout.write(self.style.SUCCESS(f"{action}: registered ({webhook_id}) -> {url}"))
        self.stdout.write(
            "LiveChat delivers license webhooks only while the app is installed on the license."
        )

    def _list(self, api: ConfigurationAPI) -> None:
        webhooks = api.list_webhooks(owner_client_id=settings.LIVECHAT_CLIENT_ID)
        if not webhooks:
            self.stdout.write("no webhooks registered for this app")
        for webhook in webhooks:
            filters = webhook.get("filters") or {}
            self.stdout.write(
                f"{webhook.get('id')}  {webhook.get('action')}  {webhook.get('url')}  "
                f"type={webhook.get('type', '')}"
                + (f"  filters={json.dumps(filters, sort_keys=True)}" if filters else "")
            )

    def _remove(self, api: ConfigurationAPI, ids: list[str], *, every: bool) -> None:
        owner = settings.LIVECHAT_CLIENT_ID
        if every == bool(ids):
            raise CommandError("give either webhook ids or --all")
        if every:
            ids = [str(w["id"]) for w in api.list_webhooks(owner_client_id=owner)]
            if not ids:
                self.stdout.write("no webhooks registered for this app")
        failures = []
        for webhook_id in ids:
            try:
                api.unregister_webhook(webhook_id=webhook_id, owner_client_id=owner)
            except LiveChatError as exc:
                failures.append(f"{webhook_id}: {_explain(exc)}")
                continue
            self.stdout.write(f"removed {webhook_id}")
        if failures:
            raise CommandError("not removed: " + "; ".join(failures))


def _up_to_date(webhook: dict[str, Any], *, secret: str, filters: dict[str, Any]) -> bool:
    # LiveChat may leave the secret out of the listing; then only what it shows is compared.
    secret_ok = webhook.get("secret_key") in (None, "", secret)
    listed = webhook.get("filters") or {}
    # Keys LiveChat may add with empty defaults do not make a webhook different.
    same_filters = all(listed.get(key) == value for key, value in filters.items()) and not any(
        value for key, value in listed.items() if key not in filters
    )
    return secret_ok and same_filters


def _explain(exc: LiveChatError) -> str:
    if exc.error_type == "not_found":
        return "no such webhook for this app"
    if exc.error_type == "limit_reached":
        return (
            "LiveChat allows at most 3 webhooks per action per app: remove unused ones "
            "(`livechat_webhooks list`, then `remove ID`)"
        )
    if exc.error_type in ("authentication", "authorization"):
        return (
            f"{exc} — check LIVECHAT_PAT/LIVECHAT_ACCOUNT_ID, or connect with `livechat_connect`"
            " (the token needs the webhooks.configuration:rw scope)"
        )
    return str(exc)
