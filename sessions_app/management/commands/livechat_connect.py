"""`python manage.py livechat_connect`: connect the bridge to LiveChat from a terminal, or check
that it is connected.

    livechat_connect --refresh-token TOKEN        (or `-` to read it from stdin)
    livechat_connect --code CODE --redirect-uri URI
    livechat_connect --status
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions_app.livechat import oauth
from sessions_app.livechat.errors import LiveChatError

STDIN = "-"  # --refresh-token - : read the token from standard input


class Command(BaseCommand):
    help = (
        "Store LiveChat agent tokens from a refresh token or an authorization code, or check "
        "(--status) that the bridge can mint customer tokens right now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument(
            "--refresh-token",
            metavar="TOKEN",
            help="a refresh token of the app (`-` reads it from stdin, out of the shell history); "
            "it is used at once and the one that replaces it is stored",
        )
        mode.add_argument(
            "--code", metavar="CODE", help="an authorization code from LiveChat's consent page"
        )
        mode.add_argument(
            "--status",
            action="store_true",
            help="refresh the agent token if due and try it on LiveChat (creates nothing)",
        )
        parser.add_argument(
            "--redirect-uri",
            metavar="URI",
            help="with --code: the redirect_uri the code was issued for "
            "(default LIVECHAT_REDIRECT_URI)",
        )

    def handle(
        self,
        *args: Any,
        refresh_token: str | None,
        code: str | None,
        status: bool,
        redirect_uri: str | None,
        **options: Any,
    ) -> None:
        if status:
            self._status()
            return
        try:
            if code is not None:
                redirect_uri = redirect_uri or settings.LIVECHAT_REDIRECT_URI
                if not redirect_uri:
                    raise CommandError(
                        "--code needs --redirect-uri (the exact URI the code was issued for)"
                    )
                connection = oauth.exchange_code(code=code.strip(), redirect_uri=redirect_uri)
            else:
                from_stdin = refresh_token == STDIN
                token = sys.stdin.readline() if from_stdin else refresh_token or ""
                if not token.strip():
                    raise CommandError("--refresh-token is empty")
                connection = oauth.connect_with_refresh_token(token.strip())
        except LiveChatError as exc:
            raise CommandError(f"LiveChat refused: {exc}. Nothing was stored.") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Connected to LiveChat: account {connection.account_id or 'unknown'}, "
                f"organization {connection.organization_id or 'unknown'}; agent token valid "
                f"until {connection.access_token_expires_at:%Y-%m-%d %H:%M:%S %Z}."
            )
        )
        self.stdout.write(
            "The refresh token is stored in the database and replaced on every refresh; "
            "LIVECHAT_REFRESH_TOKEN is no longer needed."
        )
        for warning in connection.warnings:
            self.stderr.write(self.style.WARNING(f"Warning: {warning}"))

    def _status(self) -> None:
        result = oauth.connection_status()
        for line in result.lines:
            self.stdout.write(line)
        if not result.ok:
            raise CommandError(
                "the bridge cannot mint LiveChat customer tokens: " + "; ".join(result.problems)
            )
        self.stdout.write(self.style.SUCCESS("OK: the bridge can mint LiveChat customer tokens."))
