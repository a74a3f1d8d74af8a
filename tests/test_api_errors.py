"""Bad input gets the contract's JSON error, never a 500, and changes nothing."""

from __future__ import annotations

import time

import pytest

from sessions_app.models import ChatSession, Message
from tests.conftest import API_KEY, BridgeAPI

BAD = {"type": "bad", "message": "bad request"}
PATHS = ["/init", "/messages", "/send", "/close"]


@pytest.mark.parametrize("path", PATHS)
def test_no_or_wrong_api_key_is_refused(live_server, livechat, path):
    clients = [
        BridgeAPI(live_server.url, key=None),
        BridgeAPI(live_server.url, key="nope"),
        BridgeAPI(live_server.url, key=API_KEY[:-1]),  # a guess that is right but for the end
    ]
    # The key under another scheme: a client's misconfiguration, told so rather than served.
    basic = BridgeAPI(live_server.url, key=None)
    basic.http.headers["Authorization"] = f"Basic {API_KEY}"
    for client in [*clients, basic]:
        response = client.post(path, {"line_id": "U1", "message": "hi"})
        assert response.status_code == 401
        assert response.json() == {"type": "bad", "message": "unauthorized"}
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert not ChatSession.objects.exists()


def test_without_a_configured_key_the_api_refuses_everyone(live_server, livechat, settings):
    settings.BRIDGE_API_KEY = ""
    response = BridgeAPI(live_server.url, key="").post("/send", {"line_id": "U1"})
    assert response.status_code == 401
    # Not even a caller who sends an empty key, the configured one's match.
    empty = BridgeAPI(live_server.url, key=None)
    empty.http.headers["Authorization"] = "Bearer "
    response = empty.post("/init", {"line_id": "U1"})
    assert response.status_code == 401
    assert not ChatSession.objects.exists()


@pytest.mark.parametrize("path", PATHS)
def test_malformed_json(api, path):
    response = api.post(path, data=b'{"line_id": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == BAD


def test_json_nested_too_deeply_is_malformed_not_a_crash(api):
    deep = b"[" * 30_000 + b"]" * 30_000  # under the 64 KB limit, beyond Python's recursion
    response = api.post("/send", data=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == BAD


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("body", [{}, {"line_id": ""}, [1, 2], "text", {"line_id": "x" * 65}])
def test_missing_or_invalid_line_id(api, path, body):
    response = api.post(path, body)
    assert response.status_code == 400
    assert response.json() == BAD


def test_a_line_id_of_64_characters_is_taken(api):
    line_id = "U" + "f" * 63  # as long as the column it is kept in
    assert api.call("/init", {"line_id": line_id})["type"] == "ok"
    assert api.call("/send", {"line_id": line_id, "message": "hi"})["type"] == "send"
    assert ChatSession.objects.get().line_id == line_id


def test_init_refuses_a_display_name_longer_than_255_characters(api, livechat):
    response = api.post("/init", {"line_id": "U1", "display_name": "n" * 256})
    assert (response.status_code, response.json()) == (400, BAD)  # not a 500 from the database
    assert not ChatSession.objects.exists() and not livechat.customers
    assert api.call("/init", {"line_id": "U1", "display_name": "n" * 255})["type"] == "ok"


@pytest.mark.parametrize("path", ["/messages", "/send", "/close"])
def test_unknown_line_id(api, path):
    response = api.post(path, {"line_id": "Unobody", "message": "hi"})
    assert response.status_code == 400
    assert response.json() == BAD
    assert not Message.objects.exists()


@pytest.mark.parametrize("message", ["", "   ", None, 12, "あ" * 6000])
def test_send_rejects_empty_non_text_and_oversized_messages(api, message):
    api.call("/init", {"line_id": "U1"})
    response = api.post("/send", {"line_id": "U1", "message": message})
    assert response.status_code == 400
    assert response.json() == BAD
    assert not Message.objects.filter(direction=Message.Direction.TO_AGENT).exists()


def test_send_takes_a_message_of_exactly_16000_bytes(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    longest = "あ" * 5333 + "x"  # 15,999 bytes of kana, and one more
    assert api.call("/send", {"line_id": "U1", "message": longest})["type"] == "send"
    response = api.post("/send", {"line_id": "U1", "message": longest + "x"})
    assert (response.status_code, response.json()) == (400, BAD)
    drain()
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    assert [e["text"] for e in livechat.events(chat_id) if e["type"] == "message"] == [longest]


def test_oversized_body(api):
    response = api.post("/send", {"line_id": "U1", "message": "x" * 100_000})
    assert response.status_code == 413
    assert response.json() == {"type": "bad", "message": "request too large"}


def test_wrong_content_type(api):
    response = api.post("/send", data=b"line_id=U1", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["type"] == "bad"


@pytest.mark.parametrize("path", PATHS)
def test_get_is_not_allowed_and_still_json(api, path):
    response = api.http.get(f"{api.base_url}{path}", timeout=5)
    assert response.status_code == 405
    assert response.json() == {"type": "bad", "message": "method not allowed"}


@pytest.mark.parametrize("path", ["/init/", "/send/", "/messages/", "/close/"])
def test_trailing_slash_works(api, path):
    api.call("/init", {"line_id": "U1"})
    response = api.post(path, {"line_id": "U1", "message": "hi", "wait": 0})
    assert response.status_code == 200
    assert response.json()["type"] in {"ok", "send", "end"}


def test_messages_wait_is_capped_and_validated(api, settings):
    api.call("/init", {"line_id": "U1"})
    settings.MESSAGES_MAX_WAIT = 0.5
    started = time.monotonic()
    response = api.http.post(
        f"{api.base_url}/messages", json={"line_id": "U1", "wait": 60}, timeout=10
    )
    assert response.json() == {"type": "ok", "message": ""}
    assert time.monotonic() - started < 5  # not the minute asked for: a client's timeout is less
    assert api.post("/messages", {"line_id": "U1", "wait": -1}).status_code == 400
    assert api.post("/messages", {"line_id": "U1", "wait": "soon"}).status_code == 400


@pytest.mark.parametrize("key", ["", '""', "two words", "k" * 61, "caf\xe9", "tab\tkey"])
def test_a_malformed_idempotency_key_is_refused_and_nothing_queued(api, key):
    api.call("/init", {"line_id": "U1"})
    response = api.post(
        "/send", {"line_id": "U1", "message": "hi"}, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 400
    assert response.json() == BAD
    assert not Message.objects.filter(direction=Message.Direction.TO_AGENT).exists()


def test_an_idempotency_key_of_60_characters_is_taken(api):
    api.call("/init", {"line_id": "U1"})
    key = "k" * 60  # the longest the README allows
    for replayed in (None, "true"):
        response = api.post(
            "/send", {"line_id": "U1", "message": "hi"}, headers={"Idempotency-Key": key}
        )
        assert (response.status_code, response.headers.get("Idempotent-Replayed")) == (
            200,
            replayed,
        )
    assert Message.objects.filter(direction=Message.Direction.TO_AGENT).count() == 1
