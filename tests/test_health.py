from __future__ import annotations

import requests


def test_healthz_says_what_is_not_configured(live_server, settings):
    settings.LINE_CHANNEL_SECRET = ""
    settings.LIVECHAT_CLIENT_ID = ""
    response = requests.get(f"{live_server.url}/healthz", timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok"
    assert "LINE_CHANNEL_SECRET" in body["not_configured"]["line"]
    assert "LIVECHAT_CLIENT_ID" in body["not_configured"]["livechat"]


def test_healthz_is_quiet_when_configured(live_server, livechat, settings):
    settings.LINE_CHANNEL_SECRET = "s"
    settings.LINE_CHANNEL_ACCESS_TOKEN = "t"
    body = requests.get(f"{live_server.url}/healthz", timeout=5).json()
    assert body["not_configured"] == {}
