"""The operator's LiveChat commands, run as an operator would, against the fake LiveChat over real
HTTP: connect from a terminal, check the connection, register webhooks, manage agents."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from sessions_app.models import ChatSession, LiveChatCredential, Message
from tests.conftest import ROOT, process_environment
from tests.fakes import livechat as fake_livechat

ACCOUNT_ID = "pat-account-id"
PAT = "dal:personal-access-token"
BRIDGE_URL = "https://bridge.example.com"
WEBHOOK_URL = f"{BRIDGE_URL}/livechat/webhook"
ACTIONS = {
    "incoming_event",
    "chat_deactivated",
    "incoming_chat",
    "user_added_to_chat",
    "chat_transferred",
    "events_marked_as_seen",
}


def run(*args: str, stdin: str | None = None, monkeypatch=None) -> str:
    """Run a command and return what it printed."""
    out = io.StringIO()
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def fails(*args: str) -> str:
    """Run a command that must fail (exit status 1 from a shell); its error message."""
    with pytest.raises(CommandError) as failure:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    return str(failure.value)


@pytest.fixture
def pat(livechat, settings):
    """A personal access token configured for the Configuration API."""
    livechat.pats = {ACCOUNT_ID: PAT}
    settings.LIVECHAT_PAT = PAT
    settings.LIVECHAT_ACCOUNT_ID = ACCOUNT_ID
    return PAT


def basic(account_id: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{account_id}:{token}".encode()).decode()


# --------------------------------------------------------------------------- livechat_connect


def test_connect_with_a_refresh_token_stores_the_rotated_one(livechat, settings):
    settings.LIVECHAT_REFRESH_TOKEN = ""
    given = livechat.valid_refresh_token

    output = run("livechat_connect", "--refresh-token", given)

    assert f"Connected to LiveChat: account {livechat.account_id}" in output
    (call,) = livechat.calls_to("token")
    assert call.body["grant_type"] == "refresh_token"
    assert call.body["refresh_token"] == given
    credential = LiveChatCredential.objects.get()
    assert credential.refresh_token == livechat.valid_refresh_token != given
    assert credential.access_token
    assert credential.organization_id == livechat.organization_id


def test_a_token_issued_for_an_hour_is_known_to_last_an_hour(livechat, client):
    livechat.token_lifetime = 3600  # `expires_in` is LiveChat's to choose, not always 8 hours

    run("livechat_connect", "--refresh-token", livechat.valid_refresh_token)

    expires_in = client.get("/healthz").json()["livechat"]["access_token_expires_in"]
    assert 3500 < expires_in <= 3600


def test_connect_reads_the_refresh_token_from_stdin(livechat, monkeypatch):
    given = livechat.valid_refresh_token

    run("livechat_connect", "--refresh-token", "-", stdin=f"{given}\n", monkeypatch=monkeypatch)

    assert livechat.calls_to("token")[0].body["refresh_token"] == given
    assert LiveChatCredential.objects.get().refresh_token == livechat.valid_refresh_token


def test_a_refused_refresh_token_keeps_the_working_one(livechat):
    run("livechat_connect", "--refresh-token", livechat.valid_refresh_token)
    working = LiveChatCredential.objects.get().refresh_token

    message = fails("livechat_connect", "--refresh-token", "mistyped")

    assert "refresh token is invalid" in message and "Nothing was stored" in message
    assert LiveChatCredential.objects.get().refresh_token == working == livechat.valid_refresh_token


def test_connect_with_a_code(livechat):
    livechat.authorization_codes.add("the-code")
    redirect_uri = f"{BRIDGE_URL}/livechat/connect/callback"

    output = run("livechat_connect", "--code", "the-code", "--redirect-uri", redirect_uri)

    assert "Connected to LiveChat" in output
    (call,) = livechat.calls_to("token")
    assert call.body["grant_type"] == "authorization_code"
    assert call.body["code"] == "the-code"
    assert call.body["redirect_uri"] == redirect_uri
    assert LiveChatCredential.objects.get().refresh_token == livechat.valid_refresh_token


def test_a_code_needs_the_redirect_uri_it_was_issued_for(livechat):
    livechat.authorization_codes.add("the-code")

    assert "--redirect-uri" in fails("livechat_connect", "--code", "the-code")
    assert livechat.calls == []


def test_connect_warns_when_the_organization_differs(livechat, settings):
    settings.LIVECHAT_ORGANIZATION_ID = "another-org"

    output = run("livechat_connect", "--refresh-token", livechat.valid_refresh_token)

    assert "Warning" in output and livechat.organization_id in output and "another-org" in output


def test_connect_says_which_organization_to_set_when_none_is(livechat, settings):
    settings.LIVECHAT_ORGANIZATION_ID = ""

    output = run("livechat_connect", "--refresh-token", livechat.valid_refresh_token)

    assert (
        f"Warning: LIVECHAT_ORGANIZATION_ID is not set: set it to {livechat.organization_id}"
        in (output)
    )


def test_connect_warns_when_the_token_cannot_mint_customer_tokens(livechat, monkeypatch):
    # An app without the admin-only customers:own scope gets tokens the bridge cannot use.
    monkeypatch.setattr(fake_livechat, "SCOPE", "chats--all:rw agents--all:rw")

    output = run("livechat_connect", "--refresh-token", livechat.valid_refresh_token)

    assert "Warning: the token lacks the `customers:own` scope" in output


def test_status_refreshes_and_tries_the_token_without_creating_anything(livechat):
    # Only LIVECHAT_REFRESH_TOKEN is known, as on a fresh deployment.
    output = run("livechat_connect", "--status")

    assert "OK: the bridge can mint LiveChat customer tokens" in output
    assert f"account {livechat.account_id}" in output
    assert [c.name for c in livechat.calls] == ["token", "configuration/list_agents"]
    (check,) = livechat.calls_to("configuration/list_agents")
    assert (
        check.headers["authorization"] == f"Bearer {LiveChatCredential.objects.get().access_token}"
    )
    assert livechat.customers == {}  # no customer was minted to find out


def test_status_uses_a_fresh_token_without_refreshing(livechat):
    run("livechat_connect", "--refresh-token", livechat.valid_refresh_token)
    livechat.calls.clear()

    run("livechat_connect", "--status")

    assert [c.name for c in livechat.calls] == ["configuration/list_agents"]


def test_status_is_ok_for_an_app_without_the_agents_scope(livechat):
    # The bridge needs customers:own, not agents--all:r: LiveChat's `authorization` refusal of
    # list_agents still proves the token is accepted.
    livechat.fail("configuration/list_agents", status=403, error_type="authorization")

    output = run("livechat_connect", "--status")

    assert "OK: the bridge can mint LiveChat customer tokens" in output
    assert "agent token accepted (the app has no agents scope" in output


def test_status_fails_when_the_configuration_api_refuses_the_call_otherwise(livechat):
    livechat.fail("configuration/list_agents", status=400, error_type="license_expired")

    assert "could not be checked" in fails("livechat_connect", "--status")


def test_status_says_when_the_accounts_service_cannot_be_reached(livechat):
    livechat.fail("token", status=503)

    message = fails("livechat_connect", "--status")

    assert "accounts service could not be reached" in message and "refused" not in message


def test_status_refreshes_a_token_revoked_before_its_expiry(livechat):
    run("livechat_connect", "--refresh-token", livechat.valid_refresh_token)
    livechat.expire_tokens()  # the stored token still looks fresh, LiveChat refuses it
    livechat.calls.clear()

    output = run("livechat_connect", "--status")

    assert "OK" in output
    assert [c.name for c in livechat.calls] == [
        "configuration/list_agents",
        "token",
        "configuration/list_agents",
    ]


def test_status_after_both_tokens_were_revoked_says_connect_again_and_then_asks_nothing(livechat):
    run("livechat_connect", "--refresh-token", livechat.valid_refresh_token)
    livechat.expire_tokens()  # the stored access token still looks fresh
    livechat.valid_refresh_token = "dal:spent-by-another-deployment"

    message = fails("livechat_connect", "--status")

    assert "refused the bridge's refresh token" in message and "livechat_connect" in message
    assert "could not be reached" not in message
    # Known refused now: the next check costs no (billed) call.
    calls = len(livechat.calls)
    assert "refused the bridge's refresh token" in fails("livechat_connect", "--status")
    assert len(livechat.calls) == calls


def test_status_fails_when_the_refresh_token_is_refused(livechat, settings):
    settings.LIVECHAT_REFRESH_TOKEN = "revoked"

    message = fails("livechat_connect", "--status")

    assert "cannot mint LiveChat customer tokens" in message
    assert "refused the bridge's refresh token" in message and "livechat_connect" in message
    # Asked once: the refused token is not offered to LiveChat again.
    assert "refused the bridge's refresh token" in fails("livechat_connect", "--status")
    assert [call.status for call in livechat.calls_to("token")] == [400]
    # The overall status says so too, without a call.
    assert "LiveChat refused the stored refresh token: connect again" in run("bridge_status")
    assert len(livechat.calls_to("token")) == 1


def test_bridge_status_says_what_is_missing_and_what_waits(api, livechat, settings):
    settings.LINE_CHANNEL_SECRET, settings.LINE_CHANNEL_ACCESS_TOKEN = "s", ""
    api.call("/init", {"line_id": "U1"})
    api.call("/send", {"line_id": "U1", "message": "queued, the worker is not running"})

    output = run("bridge_status")

    assert "line: NOT configured: set LINE_CHANNEL_ACCESS_TOKEN" in output
    assert "livechat: configured" in output and "refused" not in output
    assert "outbox livechat: 1 waiting since" in output


def test_bridge_status_counts_each_route_and_names_its_oldest_tried_rows_error(db):
    session = ChatSession.objects.create(line_id="U1")
    start = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    for minutes, route, status, error in [
        (0, "livechat", "pending", ""),  # the oldest, not tried yet
        (1, "livechat", "pending", "RetryableError: LiveChat HTTP 503 (the oldest tried)"),
        (2, "livechat", "pending", "RetryableError: LiveChat HTTP 429 (a later one)"),
        (3, "line_push", "pending", "RetryableError: LINE HTTP 429 monthly limit"),
        (4, "line_push", "failed", "PermanentError: LINE HTTP 400"),
        (5, "livechat", "failed", "PermanentError: LiveChat HTTP 422"),
        (6, "livechat", "sent", ""),
    ]:
        Message.objects.create(
            session=session,
            direction="to_agent" if route == "livechat" else "to_user",
            route=route,
            status=status,
            last_error=error,
            created_at=start + timedelta(minutes=minutes),
        )

    lines = run("bridge_status").splitlines()

    since = f"{start:%Y-%m-%d %H:%M:%S}"
    assert (
        f"outbox livechat: 3 waiting since {since}, the oldest tried one because: "
        + ("RetryableError: LiveChat HTTP 503 (the oldest tried)")
        in lines
    )
    since = f"{start + timedelta(minutes=3):%Y-%m-%d %H:%M:%S}"
    assert (
        f"outbox line_push: 1 waiting since {since}, the oldest tried one because: "
        + ("RetryableError: LINE HTTP 429 monthly limit")
        in lines
    )
    assert "2 message(s) failed for good (see the admin)" in lines


def test_status_fails_when_nothing_is_configured(livechat, settings):
    settings.LIVECHAT_REFRESH_TOKEN = ""

    message = fails("livechat_connect", "--status")

    assert "LIVECHAT_REFRESH_TOKEN" in message
    assert livechat.calls == []


def test_status_fails_when_the_organization_differs(livechat, settings):
    settings.LIVECHAT_ORGANIZATION_ID = "another-org"

    assert "another-org" in fails("livechat_connect", "--status")


def test_status_exits_non_zero_from_a_shell(livechat, settings):
    """What an operator's script sees: exit status 1 and the reason on stderr."""
    environment = process_environment(settings, LIVECHAT_REFRESH_TOKEN="revoked")

    def status() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "livechat_connect", "--status"],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = status()
    assert refused.returncode == 1
    assert "cannot mint LiveChat customer tokens" in refused.stderr

    environment["LIVECHAT_REFRESH_TOKEN"] = livechat.valid_refresh_token
    accepted = status()
    assert accepted.returncode == 0, accepted.stderr
    assert "OK" in accepted.stdout


# --------------------------------------------------------------------------- livechat_webhooks


def test_register_twice_registers_each_webhook_once(livechat, pat):
    first = run("livechat_webhooks", "register", "--url", BRIDGE_URL)
    second = run("livechat_webhooks", "register", "--url", BRIDGE_URL)

    assert len(livechat.webhooks) == len(ACTIONS)
    assert {w["action"] for w in livechat.webhooks.values()} == ACTIONS
    for webhook in livechat.webhooks.values():
        assert webhook["url"] == WEBHOOK_URL
        assert webhook["secret_key"] == livechat.webhook_secret
        assert webhook["owner_client_id"] == livechat.client_id
        assert webhook["type"] == "license"
        expected = {"author_type": "agent"} if webhook["action"] == "incoming_event" else {}
        assert webhook["filters"] == expected
    assert first.count("registered (") == len(ACTIONS)
    assert second.count("already registered") == len(ACTIONS)
    assert len(livechat.calls_to("register_webhook")) == len(ACTIONS)
    assert "only while the app is installed" in first
    for call in livechat.calls_to("configuration/register_webhook"):
        assert call.headers["authorization"] == basic(ACCOUNT_ID, PAT)
        assert call.headers["x-region"] == "dal"


def test_register_accepts_the_full_webhook_url(livechat, pat):
    run("livechat_webhooks", "register", "--url", WEBHOOK_URL + "/")

    assert {w["url"] for w in livechat.webhooks.values()} == {WEBHOOK_URL}


def test_register_without_a_pat_uses_the_agent_oauth_token(livechat, settings):
    run("livechat_connect", "--refresh-token", livechat.valid_refresh_token)

    run("livechat_webhooks", "register", "--url", BRIDGE_URL)

    assert len(livechat.webhooks) == len(ACTIONS)
    access_token = LiveChatCredential.objects.get().access_token
    for call in livechat.calls_to("configuration/register_webhook"):
        assert call.headers["authorization"] == f"Bearer {access_token}"


def test_register_replaces_a_webhook_with_an_old_secret(livechat, pat, settings):
    settings.LIVECHAT_WEBHOOK_SECRET = "old-secret"
    run("livechat_webhooks", "register", "--url", BRIDGE_URL)
    settings.LIVECHAT_WEBHOOK_SECRET = "new-secret"

    output = run("livechat_webhooks", "register", "--url", BRIDGE_URL)

    assert output.count("removed outdated") == len(ACTIONS)
    assert len(livechat.webhooks) == len(ACTIONS)
    assert {w["secret_key"] for w in livechat.webhooks.values()} == {"new-secret"}


def test_register_leaves_other_urls_alone(livechat, pat):
    run("livechat_webhooks", "register", "--url", "https://staging.example.com")

    run("livechat_webhooks", "register", "--url", BRIDGE_URL)

    assert len(livechat.webhooks) == 2 * len(ACTIONS)


def test_register_needs_the_webhook_secret(livechat, pat, settings):
    settings.LIVECHAT_WEBHOOK_SECRET = ""

    assert "LIVECHAT_WEBHOOK_SECRET" in fails("livechat_webhooks", "register", "--url", BRIDGE_URL)
    assert livechat.webhooks == {}


def test_register_explains_the_per_action_limit(livechat, pat):
    for host in ("a", "b", "c"):
        run("livechat_webhooks", "register", "--url", f"https://{host}.example.com")

    message = fails("livechat_webhooks", "register", "--url", BRIDGE_URL)

    assert "at most 3 webhooks per action" in message


def test_register_with_a_refused_pat(livechat, settings):
    settings.LIVECHAT_PAT = "wrong"
    settings.LIVECHAT_ACCOUNT_ID = ACCOUNT_ID

    message = fails("livechat_webhooks", "register", "--url", BRIDGE_URL)

    assert "LIVECHAT_PAT" in message
    assert len(livechat.calls_to("list_webhooks")) == 1  # a PAT is not retried
    assert livechat.webhooks == {}


def test_list_prints_the_apps_webhooks(livechat, pat):
    assert "no webhooks registered" in run("livechat_webhooks", "list")
    run("livechat_webhooks", "register", "--url", BRIDGE_URL)

    output = run("livechat_webhooks", "list")

    for webhook_id, webhook in livechat.webhooks.items():
        assert f"{webhook_id}  {webhook['action']}  {WEBHOOK_URL}" in output
    assert 'filters={"author_type": "agent"}' in output


def test_remove_by_id_and_all(livechat, pat):
    run("livechat_webhooks", "register", "--url", BRIDGE_URL)
    first, second, *rest = list(livechat.webhooks)

    output = run("livechat_webhooks", "remove", first, second)

    assert f"removed {first}" in output and f"removed {second}" in output
    assert set(livechat.webhooks) == set(rest)

    output = run("livechat_webhooks", "remove", "--all")

    assert output.count("removed ") == len(ACTIONS) - 2
    assert livechat.webhooks == {}


def test_remove_an_unknown_id(livechat, pat):
    run("livechat_webhooks", "register", "--url", BRIDGE_URL)
    known = next(iter(livechat.webhooks))

    message = fails("livechat_webhooks", "remove", "no-such-id", known)

    assert "no-such-id: no such webhook" in message
    assert known not in livechat.webhooks  # the others are still removed
    assert len(livechat.webhooks) == len(ACTIONS) - 1


def test_remove_needs_ids_or_all(livechat, pat):
    assert "--all" in fails("livechat_webhooks", "remove")
    assert livechat.calls == []


# --------------------------------------------------------------------------- livechat_agents


def test_agents_list(livechat, pat):
    output = run("livechat_agents", "list")

    assert "agent@example.com  Agent Smith  role=owner" in output
    assert "1 agent(s)" in output


def test_agents_create_duplicate_and_delete(livechat, pat):
    output = run(
        "livechat_agents",
        "create",
        "jane@example.com",
        "--name",
        "Jane Doe",
        "--role",
        "administrator",
        "--max-chats",
        "4",
        "--group",
        "0",
        "--group",
        "1",
        "--job-title",
        "Night shift",
    )

    assert "created agent jane@example.com" in output
    jane = livechat.agents["jane@example.com"]
    assert jane["name"] == "Jane Doe"
    assert jane["role"] == "administrator"
    assert jane["max_chats_count"] == 4
    assert jane["groups"] == [{"id": 0, "priority": "normal"}, {"id": 1, "priority": "normal"}]
    assert jane["job_title"] == "Night shift"
    assert "jane@example.com  Jane Doe" in run("livechat_agents", "list")

    message = fails("livechat_agents", "create", "jane@example.com", "--name", "Jane Again")
    assert message == "agent jane@example.com already exists"
    assert livechat.agents["jane@example.com"]["name"] == "Jane Doe"

    assert "deleted agent jane@example.com" in run("livechat_agents", "delete", "jane@example.com")
    assert "jane@example.com" not in livechat.agents

    message = fails("livechat_agents", "delete", "jane@example.com")
    assert message == "not deleted: jane@example.com: no such agent"


def test_agents_create_checks_max_chats_before_calling(livechat, pat):
    with pytest.raises(CommandError, match="between 0 and 20"):
        call_command(
            "livechat_agents",
            "create",
            "jane@example.com",
            "--name",
            "Jane",
            "--max-chats",
            "25",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert livechat.calls == []


def test_agents_with_the_oauth_token_refresh_when_expired(livechat):
    run("livechat_connect", "--refresh-token", livechat.valid_refresh_token)
    LiveChatCredential.objects.update(access_token_expires_at=timezone.now() - timedelta(hours=1))
    livechat.calls.clear()

    assert "agent@example.com" in run("livechat_agents", "list")

    assert [c.name for c in livechat.calls] == ["token", "configuration/list_agents"]


def test_agents_without_any_credentials(livechat, settings):
    settings.LIVECHAT_REFRESH_TOKEN = ""

    message = fails("livechat_agents", "list")

    assert "not configured" in message and "LIVECHAT_REFRESH_TOKEN" in message
