"""An operator in the admin: finds a conversation, reads its transcript, sees what failed, sends it
again; and never sees a token."""

from __future__ import annotations

import io
import time
from datetime import timedelta
from types import SimpleNamespace
from unittest import mock

import pytest
from django.contrib.auth.models import Permission, User
from django.core import signing
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from sessions_app import admin_site, delivery
from sessions_app.models import ChatSession, InboundEvent, LiveChatCredential, Message

CUSTOMER_TOKEN = "dal:customer-token-never-shown-0001"
ACCESS_TOKEN = "dal:agent-access-token-never-shown-0002"
REFRESH_TOKEN = "dal:agent-refresh-token-never-shown-0003"
WEBHOOK_SECRET = "webhook-secret-never-shown-0004"
REPLY_TOKEN = "line-reply-token-never-shown-0005"
FIELD_TOKEN = "session-field-token-never-shown-0006"
SECRETS = (CUSTOMER_TOKEN, ACCESS_TOKEN, REFRESH_TOKEN, WEBHOOK_SECRET, REPLY_TOKEN, FIELD_TOKEN)


@pytest.fixture
def transcript(db) -> ChatSession:
    session = ChatSession.objects.create(
        line_id="U0123456789abcdef0123456789abcdef",
        display_name="Hanako",
        state=ChatSession.State.WITH_AGENT,
        agent_name="Agent Smith",
        customer_id="cust-42",
        customer_token=CUSTOMER_TOKEN,
        customer_token_expires_at=timezone.now() + timedelta(hours=8),
        chat_id="CHAT42",
        thread_id="THREAD1",
    )
    Message.objects.create(
        session=session,
        direction=Message.Direction.TO_AGENT,
        route=Message.Route.LIVECHAT,
        body="first words from Hanako",
        status=Message.Status.SENT,
        attempts=1,
        sent_at=timezone.now(),
    )
    Message.objects.create(
        session=session,
        direction=Message.Direction.TO_USER,
        route=Message.Route.LINE_PUSH,
        body="an answer that could not be pushed",
        status=Message.Status.FAILED,
        attempts=3,
        last_error="LINE HTTP 400 invalid",
    )
    Message.objects.create(
        session=session,
        direction=Message.Direction.TO_USER,
        route=Message.Route.LINE_PUSH,
        kind=Message.Kind.NOTICE,
        body="welcome",
        payload={"reply_token": REPLY_TOKEN},
    )
    InboundEvent.objects.create(
        source=InboundEvent.Source.LIVECHAT,
        event_id="evt-livechat-1",
        event_type="incoming_event",
        payload={
            "secret_key": WEBHOOK_SECRET,
            "action": "incoming_event",
            # A list of objects, as LiveChat's session_fields are: masked inside lists too.
            "payload": {"session_fields": [{"name": "Hanako"}, {"api_token": FIELD_TOKEN}]},
        },
        outcome="relayed",
    )
    InboundEvent.objects.create(
        source=InboundEvent.Source.LINE,
        event_id="01LINEEVENT",
        event_type="follow",
        payload={"type": "follow", "replyToken": REPLY_TOKEN},
        outcome="greeted",
    )
    LiveChatCredential.objects.create(
        access_token=ACCESS_TOKEN,
        access_token_expires_at=timezone.now() + timedelta(hours=8),
        refresh_token=REFRESH_TOKEN,
        account_id="acc-1",
        organization_id="org-1",
    )
    return session


def admin_pages(session: ChatSession) -> list[str]:
    pages = []
    for model, obj in [
        ("chatsession", session),
        ("message", session.messages.filter(payload__has_key="reply_token").first()),
        ("inboundevent", InboundEvent.objects.get(source="livechat")),
        ("inboundevent", InboundEvent.objects.get(source="line")),
        ("livechatcredential", LiveChatCredential.objects.get()),
    ]:
        pages.append(reverse(f"admin:sessions_app_{model}_changelist"))
        pages.append(reverse(f"admin:sessions_app_{model}_change", args=[obj.pk]))
    return pages


def test_every_page_renders_and_no_token_is_ever_shown(admin_client, transcript):
    for url in admin_pages(transcript):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        for secret in SECRETS:
            assert secret not in html, (url, secret)


def test_session_list_shows_the_columns_and_counts(admin_client, transcript):
    html = admin_client.get(reverse("admin:sessions_app_chatsession_changelist")).content.decode()
    for text in ("Hanako", "Agent Smith", transcript.line_id):
        assert text in html
    # One waiting (the notice), one failed.
    assert '<td class="field-waiting">1</td>' in html
    assert '<td class="field-failed">1</td>' in html


def test_session_list_counts_each_sessions_own_waiting_and_failed_messages(
    admin_client, transcript
):
    other = ChatSession.objects.create(line_id="Uother", display_name="Jiro")
    for status in ["pending"] * 2 + ["failed"] * 3 + ["sent"]:
        Message.objects.create(
            session=other,
            direction=Message.Direction.TO_USER,
            route=Message.Route.LINE_PUSH,
            status=status,
        )
    html = admin_client.get(reverse("admin:sessions_app_chatsession_changelist")).content.decode()
    rows = {
        name: row for row in html.split("<tr")[1:] for name in ("Hanako", "Jiro") if name in row
    }
    assert '<td class="field-waiting">2</td>' in rows["Jiro"]
    assert '<td class="field-failed">3</td>' in rows["Jiro"]
    assert '<td class="field-waiting">1</td>' in rows["Hanako"]
    assert '<td class="field-failed">1</td>' in rows["Hanako"]


@pytest.mark.parametrize("term", ["U0123456789abcdef", "hanako", "cust-42", "CHAT42"])
def test_session_search(admin_client, transcript, term):
    ChatSession.objects.create(line_id="Uother", display_name="Someone else")
    response = admin_client.get(reverse("admin:sessions_app_chatsession_changelist"), {"q": term})
    assert list(response.context["cl"].result_list) == [transcript]


def test_session_filters(admin_client, transcript):
    url = reverse("admin:sessions_app_chatsession_changelist")
    sidebar = admin_client.get(url).context["cl"].filter_specs
    assert [str(spec.title) for spec in sidebar] == ["state", "delivery mode"]
    assert admin_client.get(url, {"state__exact": "with_agent"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"state__exact": "ended"}).context["cl"].result_count == 0
    assert admin_client.get(url, {"delivery_mode__exact": "push"}).context["cl"].result_count == 1


def test_transcript_is_inline_oldest_first_and_read_only(admin_client, transcript):
    response = admin_client.get(
        reverse("admin:sessions_app_chatsession_change", args=[transcript.pk])
    )
    html = response.content.decode()
    first = html.index("first words from Hanako")
    assert first < html.index("an answer that could not be pushed") < html.index("welcome")
    assert "LINE HTTP 400 invalid" in html
    assert 'name="messages-0-body"' not in html  # shown, not editable
    assert 'name="customer_token"' not in html


def test_editing_a_session_changes_only_its_labels(admin_client, transcript):
    url = reverse("admin:sessions_app_chatsession_change", args=[transcript.pk])
    # Meanwhile the relay moved the session on; the admin form was loaded before that.
    ChatSession.objects.filter(pk=transcript.pk).update(state=ChatSession.State.ENDED)
    response = admin_client.post(
        url,
        {
            "display_name": "Hanako Yamada",
            "language": "en",
            "messages-TOTAL_FORMS": "3",
            "messages-INITIAL_FORMS": "3",
            "messages-MIN_NUM_FORMS": "0",
            "messages-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    transcript.refresh_from_db()
    assert transcript.display_name == "Hanako Yamada"
    assert transcript.language == "en"
    assert transcript.state == ChatSession.State.ENDED
    assert transcript.customer_token == CUSTOMER_TOKEN


@pytest.mark.parametrize(
    ("choice", "bodies"),
    [
        ("failed", ["an answer that could not be pushed"]),
        ("retrying", ["refused once, tried again later"]),
        ("pending", ["refused once, tried again later", "welcome"]),
        ("sent", ["first words from Hanako"]),
        ("cancelled", ["called off by /init"]),
    ],
)
def test_delivery_filter(admin_client, transcript, choice, bodies):
    for body, status, error in [
        ("refused once, tried again later", "pending", "RetryableError: LINE HTTP 429"),
        ("called off by /init", "cancelled", ""),
    ]:
        Message.objects.create(
            session=transcript,
            direction=Message.Direction.TO_USER,
            route=Message.Route.LINE_PUSH,
            body=body,
            status=status,
            attempts=1 if error else 0,
            last_error=error,
        )
    url = reverse("admin:sessions_app_message_changelist")
    response = admin_client.get(url, {"delivery": choice})
    shown = response.context["cl"].result_list
    assert sorted(m.body for m in shown) == bodies
    html = response.content.decode()
    for message in shown:
        if message.last_error:
            assert f'<td class="field-short_error">{message.last_error}</td>' in html
    sidebar = response.context["cl"].filter_specs
    assert [str(spec.title) for spec in sidebar] == ["delivery", "route", "direction", "kind"]
    assert "Failed deliveries" in html


def test_message_search_by_line_id(admin_client, transcript):
    url = reverse("admin:sessions_app_message_changelist")
    assert admin_client.get(url, {"q": transcript.line_id}).context["cl"].result_count == 3
    assert admin_client.get(url, {"q": "nobody"}).context["cl"].result_count == 0


def test_inbound_event_search_and_filters(admin_client, transcript):
    url = reverse("admin:sessions_app_inboundevent_changelist")
    sidebar = admin_client.get(url).context["cl"].filter_specs
    assert [str(spec.title) for spec in sidebar] == ["source", "event type", "outcome"]
    found = admin_client.get(url, {"q": "evt-livechat-1"}).context["cl"].result_list
    assert [e.event_id for e in found] == ["evt-livechat-1"]
    assert admin_client.get(url, {"source__exact": "line"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"outcome": "greeted"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"event_type": "follow"}).context["cl"].result_count == 1


def test_nothing_is_added_deleted_or_edited_where_the_bridge_keeps_state(admin_client, transcript):
    for model in ("chatsession", "message", "inboundevent", "livechatcredential"):
        assert admin_client.get(reverse(f"admin:sessions_app_{model}_add")).status_code == 403
    message = transcript.messages.get(status=Message.Status.FAILED)
    url = reverse("admin:sessions_app_message_change", args=[message.pk])
    admin_client.post(url, {"status": "sent", "body": "changed"})
    message.refresh_from_db()
    assert (message.status, message.body) == ("failed", "an answer that could not be pushed")
    delete = reverse("admin:sessions_app_message_delete", args=[message.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403


def test_a_viewer_cannot_retry(client, transcript):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_message", "view_chatsession"])
    )
    client.force_login(viewer)
    url = reverse("admin:sessions_app_message_changelist")
    assert client.get(url).status_code == 200
    assert "retry_delivery" not in client.get(url).content.decode()
    failed = transcript.messages.get(status=Message.Status.FAILED)
    client.post(url, {"action": "retry_delivery", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert failed.status == Message.Status.FAILED


def retry(admin_client, *messages: Message) -> list[tuple[str, str]]:
    """Run the action on the messages; what the admin then says, and at which level."""
    response = admin_client.post(
        reverse("admin:sessions_app_message_changelist"),
        {"action": "retry_delivery", "_selected_action": [m.pk for m in messages]},
        follow=True,
    )
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def history_of(admin_client, message: Message) -> str:
    url = reverse("admin:sessions_app_message_history", args=[message.pk])
    return admin_client.get(url).content.decode()


def test_retrying_only_failed_messages_is_a_success_with_no_warning(admin_client, transcript):
    failed = transcript.messages.get(status=Message.Status.FAILED)
    assert retry(admin_client, failed) == [
        ("success", "1 failed message(s) put back in the delivery queue.")
    ]
    failed.refresh_from_db()
    assert failed.status == Message.Status.PENDING
    assert "Retry delivery" in history_of(admin_client, failed)


def test_retrying_messages_none_of_which_failed_warns_and_changes_nothing(admin_client, transcript):
    sent = transcript.messages.get(status=Message.Status.SENT)
    waiting = transcript.messages.get(status=Message.Status.PENDING)
    assert retry(admin_client, sent, waiting) == [
        ("warning", "0 failed message(s) put back in the delivery queue."),
        ("warning", "2 selected message(s) had not failed and were left as is."),
    ]
    sent.refresh_from_db()
    assert sent.status == Message.Status.SENT
    # Their history does not claim a retry that did not happen.
    assert "Retry delivery" not in history_of(admin_client, sent)
    assert "Retry delivery" not in history_of(admin_client, waiting)


def chat_texts(livechat, session: ChatSession) -> list[str]:
    return [e["text"] for e in livechat.events(session.chat_id) if e["type"] == "message"]


def test_retry_delivery_puts_a_failed_message_back_and_the_worker_delivers_it(
    admin_client, api, livechat, drain
):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    livechat.fail("send_event", status=400, error_type="validation", times=1)
    api.call("/send", {"line_id": "U1", "message": "refused at first"})
    api.call("/send", {"line_id": "U1", "message": "delivered"})
    drain()
    failed = Message.objects.get(body="refused at first")
    assert failed.status == Message.Status.FAILED
    sent = Message.objects.get(body="delivered", status=Message.Status.SENT)

    url = reverse("admin:sessions_app_message_changelist")
    response = admin_client.post(
        url, {"action": "retry_delivery", "_selected_action": [failed.pk, sent.pk]}, follow=True
    )
    shown = [str(m) for m in response.context["messages"]]
    assert "1 failed message(s) put back in the delivery queue." in shown
    assert "1 selected message(s) had not failed and were left as is." in shown
    sent.refresh_from_db()
    assert sent.status == Message.Status.SENT
    failed.refresh_from_db()
    assert failed.status == Message.Status.PENDING
    assert failed.attempts == 1 and "validation" in failed.last_error
    assert failed.leased_until is None and failed.lease_token == ""
    assert failed.next_attempt_at <= timezone.now()

    while delivery.run_once():
        pass
    failed.refresh_from_db()
    assert failed.status == Message.Status.SENT
    assert chat_texts(livechat, session) == ["delivered", "refused at first"]
    history = admin_client.get(
        reverse("admin:sessions_app_message_history", args=[failed.pk])
    ).content.decode()
    assert "Retry delivery" in history


def test_a_message_retried_after_its_max_age_gets_a_full_max_age_again(
    admin_client, api, livechat, drain, settings
):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    drain()
    settings.DELIVERY_BACKOFF_BASE = settings.DELIVERY_BACKOFF_MAX = 0.01
    livechat.fail("send_event", status=503, times=1)
    api.call("/send", {"line_id": "U1", "message": "said two days ago"})
    message = Message.objects.get(body="said two days ago")
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(days=2))
    drain()
    message.refresh_from_db()
    assert message.status == Message.Status.FAILED  # too old: failed at its first failure

    # LiveChat is back but still unsteady when the operator retries it: one more 503.
    admin_client.post(
        reverse("admin:sessions_app_message_changelist"),
        {"action": "retry_delivery", "_selected_action": [message.pk]},
    )
    livechat.fail("send_event", status=503, times=1)
    delivery.run_once()
    message.refresh_from_db()
    assert message.status == Message.Status.PENDING, message.last_error
    page = admin_client.get(reverse("admin:sessions_app_message_change", args=[message.pk]))
    assert "Requeued at" in page.content.decode()  # when its max age began again
    drain()
    message.refresh_from_db()
    assert message.status == Message.Status.SENT
    assert chat_texts(livechat, session) == ["said two days ago"]


def credential_column(admin_client, name: str) -> bool:
    """The credentials list's yes/no icon in column `name`."""
    html = admin_client.get(reverse("admin:sessions_app_livechatcredential_changelist"))
    cell = html.content.decode().split(f'<td class="field-{name}">', 1)[1].split("</td>", 1)[0]
    assert cell.count("<img") == 1, cell
    return 'alt="True"' in cell


def test_the_credentials_list_says_when_livechat_refused_the_refresh_token(
    admin_client, livechat, settings
):
    settings.LIVECHAT_REFRESH_TOKEN = "revoked"
    with pytest.raises(CommandError):
        call_command("livechat_connect", "--status", stdout=io.StringIO(), stderr=io.StringIO())
    assert credential_column(admin_client, "refresh_token_refused") is True
    assert credential_column(admin_client, "has_refresh_token") is True

    # The operator replaced the seed (the bridge never refreshed with it): that one is not refused.
    settings.LIVECHAT_REFRESH_TOKEN = "a-new-seed"
    assert credential_column(admin_client, "refresh_token_refused") is False
    settings.LIVECHAT_REFRESH_TOKEN = "revoked"
    assert credential_column(admin_client, "refresh_token_refused") is True

    # Connected again: no longer refused.
    livechat.valid_refresh_token = "granted-again"
    call_command("livechat_connect", "--refresh-token", "granted-again", stdout=io.StringIO())
    assert credential_column(admin_client, "refresh_token_refused") is False


def test_long_transcripts_show_the_latest_messages(admin_client, transcript):
    Message.objects.bulk_create(
        Message(
            session=transcript,
            direction=Message.Direction.TO_AGENT,
            route=Message.Route.LIVECHAT,
            body=f"line {n:03d}",
            status=Message.Status.SENT,
        )
        for n in range(205)
    )
    url = reverse("admin:sessions_app_chatsession_change", args=[transcript.pk])
    html = admin_client.get(url).content.decode()
    assert "line 004" not in html and "first words from Hanako" not in html
    assert html.index("line 005") < html.index("line 204")
    assert f"?session__id__exact={transcript.pk}" in html  # the link to all of them


def test_session_list_costs_the_same_for_many_sessions(
    admin_client, transcript, django_assert_max_num_queries
):
    for n in range(30):
        session = ChatSession.objects.create(line_id=f"U{n}")
        Message.objects.create(
            session=session,
            direction=Message.Direction.TO_AGENT,
            route=Message.Route.LIVECHAT,
            status=Message.Status.FAILED,
        )
    with django_assert_max_num_queries(12):
        admin_client.get(reverse("admin:sessions_app_chatsession_changelist"))


@pytest.mark.parametrize(
    ("model", "lookup", "value"),
    [
        ("livechatcredential", "refresh_token__startswith", "dal:agent-refresh"),
        ("livechatcredential", "access_token__regex", "^dal:a"),
        ("chatsession", "customer_token__startswith", "dal:c"),
        ("message", "payload__reply_token__startswith", "line-"),
        ("inboundevent", "payload__replyToken__startswith", "line-"),
    ],
)
def test_a_viewer_cannot_guess_a_token_through_the_list_filters(
    client, transcript, model, lookup, value
):
    # The count of a filtered list ("1" or "0") would tell a token one character at a time.
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename=f"view_{model}"))
    client.force_login(viewer)
    url = reverse(f"admin:sessions_app_{model}_changelist")
    assert client.get(url).status_code == 200
    assert client.get(url, {lookup: value}).status_code == 400


def sign_in(client, password: str, address: str = "203.0.113.7", username: str = "boss") -> int:
    # As Heroku's router passes it on: the client's address last in X-Forwarded-For.
    return client.post(
        reverse("admin:login"),
        {"username": username, "password": password},
        HTTP_X_FORWARDED_FOR=f"198.51.100.1, {address}",
    ).status_code


def test_sign_in_attempts_beyond_the_limit_are_refused_before_a_password_is_checked(
    client, django_user_model
):
    django_user_model.objects.create_superuser("boss", password="the-right-password")
    assert [sign_in(client, "wrong") for _ in range(5)] == [200] * 5  # the form, with an error
    response = client.post(
        reverse("admin:login"),
        {"username": "boss", "password": "the-right-password"},
        HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7",
    )
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
    # Someone else, elsewhere, still signs in.
    assert sign_in(Client(), "the-right-password", address="192.0.2.44") == 302


def test_sign_in_attempts_from_many_addresses_are_limited_in_all(client, django_user_model):
    django_user_model.objects.create_superuser("boss", password="the-right-password")
    tries = [sign_in(client, "wrong", address=f"192.0.2.{n}") for n in range(31)]
    assert tries == [200] * 30 + [429]


# --- An attack on the sign-in, and the operators who must still get in -----------------------


@pytest.fixture
def boss(django_user_model) -> User:
    return django_user_model.objects.create_superuser("boss", password="the-right-password")


def attack() -> None:
    """Wrong passwords from one address after another, until what is allowed in all is used up."""
    attacker = Client()
    tries = [sign_in(attacker, "wrong", address=f"192.0.2.{n}") for n in range(31)]
    # The form, with an error, until the ceiling in all (less what the test spent before), then 429.
    answered = tries.count(200)
    assert answered >= 28 and tries == [200] * answered + [429] * (31 - answered)


def signed_in_browser(username: str = "boss", password: str = "the-right-password") -> Client:
    """A browser in which the operator signed in, then signed out."""
    browser = Client()
    assert sign_in(browser, password, address="203.0.113.20", username=username) == 302
    browser.post(reverse("admin:logout"))
    assert "_auth_user_id" not in browser.session
    assert admin_site.SIGNED_IN_COOKIE in browser.cookies
    return browser


def signed_in_as(client) -> str | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id).username if user_id else None


def signing_clock(days: float):
    """Django's signing, and it alone, as if that many days from now."""
    return mock.patch.object(
        signing, "time", SimpleNamespace(time=lambda: time.time() + days * 86400)
    )


def test_during_an_attack_a_browser_that_never_signed_in_is_refused(boss):
    attack()
    newcomer = Client()
    assert sign_in(newcomer, "the-right-password", address="203.0.113.30") == 429
    assert signed_in_as(newcomer) is None


def test_during_an_attack_a_browser_that_signed_in_before_still_gets_in(boss):
    browser = signed_in_browser()
    attack()
    # A typo is answered with the form, not refused, and the right password then signs in.
    assert sign_in(browser, "typo", address="203.0.113.21") == 200
    assert sign_in(browser, "the-right-password", address="203.0.113.21") == 302
    assert signed_in_as(browser) == "boss"


def test_the_sign_in_cookie_is_http_only_strict_secure_over_https_and_kept_30_days(boss):
    browser = Client()
    assert sign_in(browser, "wrong") == 200
    assert admin_site.SIGNED_IN_COOKIE not in browser.cookies  # a wrong password earns nothing
    response = browser.post(
        reverse("admin:login"),
        {"username": "boss", "password": "the-right-password"},
        HTTP_X_FORWARDED_PROTO="https",
    )
    assert response.status_code == 302
    cookie = response.cookies[admin_site.SIGNED_IN_COOKIE]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Strict"
    assert cookie["max-age"] == 30 * 86400 and cookie["path"] == "/admin/"
    assert ":boss:" in cookie.value  # the user it is for, then Django's timestamp and signature

    response = Client().post(
        reverse("admin:login"), {"username": "boss", "password": "the-right-password"}
    )
    assert (
        response.status_code == 302 and not response.cookies[admin_site.SIGNED_IN_COOKIE]["secure"]
    )


def made_cookie(value: str, salt: str = admin_site.SIGNED_IN_SALT) -> str:
    response = HttpResponse()
    response.set_signed_cookie(admin_site.SIGNED_IN_COOKIE, value, salt=salt)
    return response.cookies[admin_site.SIGNED_IN_COOKIE].value


@pytest.mark.parametrize(
    ("cookie", "status"),
    [
        # The control: what the site itself signs does let the browser in.
        (lambda: made_cookie("browser-1:boss"), 302),
        (lambda: "browser-1:boss", 429),  # not signed
        (lambda: made_cookie("browser-1:boss", salt=""), 429),
        (lambda: override_settings(SECRET_KEY="x" * 50)(made_cookie)("browser-1:boss"), 429),
    ],
    ids=["genuine", "unsigned", "signed-without-the-salt", "signed-with-another-key"],
)
def test_during_an_attack_only_a_cookie_the_site_signed_lets_a_browser_in(boss, cookie, status):
    attack()
    browser = Client()
    browser.cookies[admin_site.SIGNED_IN_COOKIE] = cookie()
    assert sign_in(browser, "the-right-password", address="203.0.113.40") == status


def test_during_an_attack_a_tampered_cookie_lets_no_one_in(boss, django_user_model):
    django_user_model.objects.create_user("clerk", password="clerk-password", is_staff=True)
    browser = signed_in_browser("clerk", "clerk-password")
    genuine = browser.cookies[admin_site.SIGNED_IN_COOKIE].value
    attack()
    browser.cookies[admin_site.SIGNED_IN_COOKIE] = genuine.replace(":clerk:", ":boss:")
    assert sign_in(browser, "the-right-password", address="203.0.113.41") == 429
    assert signed_in_as(browser) is None


def test_during_an_attack_a_cookie_older_than_30_days_lets_no_one_in(boss):
    browser = signed_in_browser()
    attack()
    with signing_clock(days=31):
        assert sign_in(browser, "the-right-password", address="203.0.113.42") == 429
    assert signed_in_as(browser) is None
    # The same cookie, a day before it runs out.
    with signing_clock(days=29):
        assert sign_in(browser, "the-right-password", address="203.0.113.42") == 302


def test_during_an_attack_a_cookie_for_one_user_lets_no_one_in_as_another(boss, django_user_model):
    django_user_model.objects.create_user("clerk", password="clerk-password", is_staff=True)
    browser = signed_in_browser("clerk", "clerk-password")
    attack()
    # The clerk's browser cannot try the boss's password past the ceiling in all...
    assert sign_in(browser, "the-right-password", address="203.0.113.43") == 429
    assert signed_in_as(browser) is None
    # ...though it gets in as the clerk.
    assert sign_in(browser, "clerk-password", address="203.0.113.43", username="clerk") == 302
    assert signed_in_as(browser) == "clerk"


def test_a_stolen_cookie_sent_from_many_addresses_is_limited_on_its_own(boss):
    stolen = signed_in_browser().cookies[admin_site.SIGNED_IN_COOKIE].value
    attack()
    thief = Client()
    thief.cookies[admin_site.SIGNED_IN_COOKIE] = stolen
    tries = [sign_in(thief, "guess", address=f"198.18.0.{n}") for n in range(6)]
    assert tries == [200] * 5 + [429]


def test_a_browser_that_signed_in_before_is_still_limited_per_address(boss):
    browser = signed_in_browser()
    attacker = Client()
    assert [sign_in(attacker, "wrong", address="203.0.113.50") for _ in range(5)] == [200] * 5
    assert sign_in(browser, "the-right-password", address="203.0.113.50") == 429
