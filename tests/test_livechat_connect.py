"""An administrator connects the bridge to LiveChat in the browser (OAuth authorization code):
the state ties the callback to their session, the code is exchanged at the fake accounts service
over real HTTP, and the rotating tokens land in the one LiveChatCredential row."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from sessions_app.livechat import tokens
from sessions_app.livechat.connect_views import SESSION_STATE_KEY
from sessions_app.models import ChatSession, LiveChatCredential

CALLBACK = "/livechat/connect/callback"


def start(client) -> dict[str, str]:
    """Press "connect": the answer is a redirect to LiveChat's consent page; its query."""
    response = client.post("/livechat/connect")
    assert response.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlsplit(response["Location"]).query).items()}


def consent(livechat, code: str = "code-1") -> str:
    """What LiveChat does when the administrator approves: issue a single-use code."""
    livechat.authorization_codes.add(code)
    return code


def test_the_connect_page_only_offers_the_button(admin_client, livechat):
    response = admin_client.get("/livechat/connect")

    assert response.status_code == 200
    assert '<form method="post" action="/livechat/connect">' in response.content.decode()
    assert SESSION_STATE_KEY not in admin_client.session
    assert livechat.calls == []


def test_connect_sends_the_admin_to_livechat_with_a_state_kept_in_the_session(
    admin_client, livechat
):
    response = admin_client.post("/livechat/connect")

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}" == livechat.base_url
    assert location.path == "/"
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == livechat.client_id
    assert query["redirect_uri"] == f"http://testserver{CALLBACK}"
    assert len(query["state"]) >= 32
    assert admin_client.session[SESSION_STATE_KEY] == query["state"]
    assert livechat.calls == []  # nothing is asked of LiveChat before the admin consents


def test_callback_exchanges_the_code_and_stores_rotating_tokens(admin_client, livechat):
    query = start(admin_client)
    code = consent(livechat)

    response = admin_client.get(CALLBACK, {"code": code, "state": query["state"]})

    assert response.status_code == 200
    page = response.content.decode()
    assert "Connected to LiveChat" in page
    assert livechat.account_id in page
    assert "Warning" not in page
    (call,) = livechat.calls_to("token")
    assert call.body == {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": query["redirect_uri"],
        "client_id": livechat.client_id,
        "client_secret": livechat.client_secret,
    }
    credential = LiveChatCredential.objects.get()
    assert credential.refresh_token == livechat.valid_refresh_token
    assert credential.access_token.startswith("dal:")
    assert credential.account_id == livechat.account_id
    assert credential.organization_id == livechat.organization_id
    expected_expiry = timezone.now() + timedelta(seconds=livechat.token_lifetime)
    assert abs(credential.access_token_expires_at - expected_expiry) < timedelta(minutes=1)

    # The stored refresh token is the live one: the next refresh works and rotates it again.
    first_refresh_token = credential.refresh_token
    tokens.agent_access_token(force_refresh=True)
    credential.refresh_from_db()
    assert credential.refresh_token == livechat.valid_refresh_token != first_refresh_token


def test_a_bridge_connected_only_through_the_page_opens_chats(
    admin_client, api, livechat, settings
):
    settings.LIVECHAT_REFRESH_TOKEN = ""  # never set: the connect page is how tokens came
    query = start(admin_client)
    admin_client.get(CALLBACK, {"code": consent(livechat), "state": query["state"]})
    LiveChatCredential.objects.update(access_token_expires_at=None)  # and later, a refresh is due

    assert api.call("/init", {"line_id": "U1"})["type"] != "fail"
    customer_id = ChatSession.objects.get(line_id="U1").customer_id
    assert livechat.chat_of(customer_id) is not None
    assert [call.body["grant_type"] for call in livechat.calls_to("token")] == [
        "authorization_code",
        "refresh_token",
    ]


def test_callback_replaces_an_earlier_connection_in_the_single_row(admin_client, livechat):
    LiveChatCredential.objects.create(refresh_token="old", access_token="old", account_id="x")
    query = start(admin_client)

    response = admin_client.get(CALLBACK, {"code": consent(livechat), "state": query["state"]})

    assert response.status_code == 200
    credential = LiveChatCredential.objects.get()
    assert credential.refresh_token == livechat.valid_refresh_token
    assert credential.account_id == livechat.account_id


@pytest.mark.parametrize("state", ["forged-state", ""])
def test_wrong_state_is_refused_and_stores_nothing(admin_client, livechat, state):
    start(admin_client)
    code = consent(livechat)

    response = admin_client.get(CALLBACK, {"code": code, "state": state})

    assert response.status_code == 400
    assert "state mismatch" in response.content.decode()
    assert livechat.calls_to("token") == []
    assert not LiveChatCredential.objects.exists()
    assert code in livechat.authorization_codes  # the code was never spent


# Without a state at all, too: a link someone else planted (their code, to connect the bridge to
# their license) must not match "no connect started here".
@pytest.mark.parametrize("state", [{"state": "anything"}, {}])
def test_callback_without_a_started_connect_is_refused(admin_client, livechat, state):
    response = admin_client.get(CALLBACK, {"code": consent(livechat), **state})

    assert response.status_code == 400
    assert livechat.calls_to("token") == []
    assert not LiveChatCredential.objects.exists()


def test_a_state_is_good_for_one_callback_only(admin_client, livechat):
    query = start(admin_client)
    assert (
        admin_client.get(CALLBACK, {"code": consent(livechat), "state": query["state"]}).status_code
        == 200
    )

    replay = admin_client.get(
        CALLBACK, {"code": consent(livechat, "code-2"), "state": query["state"]}
    )

    assert replay.status_code == 400
    assert len(livechat.calls_to("token")) == 1


def test_a_refused_code_is_reported_and_stores_nothing(admin_client, livechat):
    query = start(admin_client)

    response = admin_client.get(CALLBACK, {"code": "never-issued", "state": query["state"]})

    assert response.status_code == 502
    page = response.content.decode()
    assert "LiveChat refused the code" in page
    assert "authorization code is invalid or expired" in page
    assert not LiveChatCredential.objects.exists()


def test_access_denied_at_livechat_stores_nothing(admin_client, livechat):
    query = start(admin_client)

    response = admin_client.get(CALLBACK, {"error": "access_denied", "state": query["state"]})

    assert response.status_code == 400
    assert "access_denied" in response.content.decode()
    assert livechat.calls_to("token") == []
    assert not LiveChatCredential.objects.exists()


def test_organization_mismatch_is_shown_as_a_warning(admin_client, livechat, settings):
    settings.LIVECHAT_ORGANIZATION_ID = "another-org"
    query = start(admin_client)

    response = admin_client.get(CALLBACK, {"code": consent(livechat), "state": query["state"]})

    assert response.status_code == 200
    page = response.content.decode()
    assert "Connected to LiveChat" in page
    assert "Warning" in page
    assert livechat.organization_id in page and "another-org" in page


def test_configured_redirect_uri_is_used_for_both_steps(admin_client, livechat, settings):
    settings.LIVECHAT_REDIRECT_URI = "https://bridge.example.com/livechat/connect/callback"
    query = start(admin_client)
    assert query["redirect_uri"] == settings.LIVECHAT_REDIRECT_URI

    admin_client.get(CALLBACK, {"code": consent(livechat), "state": query["state"]})

    (call,) = livechat.calls_to("token")
    assert call.body["redirect_uri"] == settings.LIVECHAT_REDIRECT_URI


def test_missing_client_settings_say_what_to_set(admin_client, livechat, settings):
    settings.LIVECHAT_CLIENT_SECRET = ""

    response = admin_client.post("/livechat/connect")

    assert response.status_code == 503
    assert "LIVECHAT_CLIENT_SECRET" in response.content.decode()
    assert SESSION_STATE_KEY not in admin_client.session


def test_non_staff_users_cannot_start_or_finish_a_connection(client, django_user_model, livechat):
    for path in ("/livechat/connect", f"{CALLBACK}?code=x&state=y"):
        anonymous = client.get(path)
        assert anonymous.status_code == 302
        assert anonymous["Location"].startswith("/admin/login/")

    user = django_user_model.objects.create_user("clerk", password="pw-not-staff-123")
    client.force_login(user)
    response = client.get("/livechat/connect")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert SESSION_STATE_KEY not in client.session
    consent(livechat)
    client.get(CALLBACK, {"code": "code-1", "state": "y"})

    assert livechat.calls == []
    assert not LiveChatCredential.objects.exists()


def test_staff_without_the_permission_to_change_credentials_cannot_connect(
    client, django_user_model, livechat
):
    LiveChatCredential.objects.create(refresh_token="working", account_id="the-admin")
    clerk = django_user_model.objects.create_user("clerk", password="pw-123", is_staff=True)
    client.force_login(clerk)

    assert client.get("/livechat/connect").status_code == 403
    assert client.post("/livechat/connect").status_code == 403
    assert SESSION_STATE_KEY not in client.session
    consent(livechat)
    assert client.get(CALLBACK, {"code": "code-1", "state": "y"}).status_code == 403

    assert livechat.calls == []
    assert LiveChatCredential.objects.get().refresh_token == "working"


def test_staff_with_the_permission_connect(client, django_user_model, livechat):
    operator = django_user_model.objects.create_user("ops", password="pw-123", is_staff=True)
    operator.user_permissions.add(Permission.objects.get(codename="change_livechatcredential"))
    client.force_login(operator)

    query = start(client)
    response = client.get(CALLBACK, {"code": consent(livechat), "state": query["state"]})

    assert response.status_code == 200
    assert LiveChatCredential.objects.get().refresh_token == livechat.valid_refresh_token


def test_a_connect_posted_from_another_site_is_refused(admin_user, livechat):
    browser = Client(enforce_csrf_checks=True)  # no CSRF token: what another site can send
    browser.force_login(admin_user)

    response = browser.post("/livechat/connect")

    assert response.status_code == 403
    assert SESSION_STATE_KEY not in browser.session


def test_an_admin_connects_in_a_real_browser_session(live_server, livechat, admin_user):
    """The whole story over HTTP: log in to the admin, click connect, approve at LiveChat,
    come back to the bridge's callback."""
    browser = requests.Session()
    login_page = browser.get(f"{live_server.url}/admin/login/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
    browser.post(
        f"{live_server.url}/admin/login/",
        data={"username": "admin", "password": "password", "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{live_server.url}/admin/login/"},
        timeout=10,
    )

    page = browser.get(f"{live_server.url}/livechat/connect", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    to_livechat = browser.post(
        f"{live_server.url}/livechat/connect",
        data={"csrfmiddlewaretoken": csrf},
        allow_redirects=False,
        timeout=10,
    )
    assert to_livechat.status_code == 302
    query = {k: v[0] for k, v in parse_qs(urlsplit(to_livechat.headers["Location"]).query).items()}
    assert query["redirect_uri"] == f"{live_server.url}{CALLBACK}"
    back = browser.get(
        query["redirect_uri"],
        params={"code": consent(livechat), "state": query["state"]},
        timeout=10,
    )

    assert back.status_code == 200
    assert "Connected to LiveChat" in back.text
    assert LiveChatCredential.objects.get().refresh_token == livechat.valid_refresh_token
