"""`Authorization: Bearer <BRIDGE_API_KEY>` for the JSON API."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from django.conf import settings
from rest_framework import authentication, exceptions
from rest_framework.request import Request


@dataclass(frozen=True)
class APIClient:
    """Whoever holds the API key: the LINE bot server that used to call the earlier bridge."""

    is_authenticated: bool = True
    key_id: str = "default"


class BridgeAPIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[APIClient, str]:
        expected = settings.BRIDGE_API_KEY
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, given = header.partition(" ")
        # Without a configured key the API refuses everyone rather than serving everyone.
        if (
            not expected
            or scheme.lower() != self.keyword.lower()
            or not hmac.compare_digest(given.strip().encode(), expected.encode())
        ):
            raise exceptions.AuthenticationFailed("unauthorized")
        return APIClient(), given

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
