"""The earlier bridge's client, pointed at this service: a whole conversation via the JSON API."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest

from sessions_app import delivery
from sessions_app.models import ChatSession, LiveChatCredential, Message
from tests.conftest import wait_until


def test_full_conversation_init_send_reply_end(api, livechat, drain):
    assert api.call("/init", {"line_id": "U1", "display_name": "Taro"}) == {
        "type": "ok",
        "message": "接続しました。",
    }
    session = ChatSession.objects.get(line_id="U1")
    chat = livechat.chats[session.chat_id]
    assert session.thread_id == chat["threads"][-1]["id"]  # the thread /init started, recorded
    customer = livechat.customers[session.customer_id]
    assert customer["name"] == "Taro"
    assert {"line_id": "U1"} in customer["session_fields"]

    assert api.call("/send", {"line_id": "U1", "message": "こんにちは"}) == {
        "type": "send",
        "message": "send",
    }
    drain()
    texts = [e.get("text") for e in chat["threads"][-1]["events"] if e["type"] == "message"]
    assert texts == ["こんにちは"]

    livechat.agent_says(session.chat_id, "How can I help?")
    assert api.call("/messages", {"line_id": "U1", "wait": 5}) == {
        "type": "message",
        "message": "How can I help?",
    }
    livechat.agent_ends_chat(session.chat_id)
    assert api.call("/messages", {"line_id": "U1", "wait": 5}) == {
        "type": "end",
        "message": "接続が終了しました。",
    }
    # Each item is handed out once; then the long poll ends empty-handed.
    assert api.call("/messages", {"line_id": "U1", "wait": 0.2}) == {"type": "ok", "message": ""}


def test_messages_long_poll_returns_as_soon_as_the_agent_answers(api, livechat):
    import threading
    import time

    api.call("/init", {"line_id": "U1"})
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    timer = threading.Timer(0.5, livechat.agent_says, args=(chat_id, "late reply"))
    timer.start()
    started = time.monotonic()
    assert api.call("/messages", {"line_id": "U1", "wait": 10})["message"] == "late reply"
    assert time.monotonic() - started < 5
    timer.join()


def test_messages_without_wait_is_a_long_poll(api, livechat):
    # The earlier bridge's clients send only line_id: the poll waits for the agent all the same.
    api.call("/init", {"line_id": "U1"})
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    timer = threading.Timer(0.5, livechat.agent_says, args=(chat_id, "late reply"))
    timer.start()
    assert api.call("/messages", {"line_id": "U1"}) == {"type": "message", "message": "late reply"}
    timer.join()


def test_init_twice_reuses_customer_and_chat(api, livechat):
    api.call("/init", {"line_id": "U1", "display_name": "Taro"})
    api.call("/init", {"line_id": "U1", "display_name": "Taro"})
    assert len(livechat.customers) == 1
    assert len(livechat.chats) == 1
    assert len(livechat.calls_to("start_chat")) == 1


def test_init_after_agent_ended_resumes_the_chat(api, livechat):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    livechat.agent_ends_chat(session.chat_id)
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    chat = livechat.chats[session.chat_id]
    assert len(chat["threads"]) == 2 and chat["threads"][-1]["active"]


def test_prechat_entities_reach_the_agent_as_session_fields(api, livechat):
    entities = [
        {
            "entityName": "Contact",
            "saveToTranscript": "ContactId",
            "entityFieldsMaps": [
                {"fieldName": "LINE_ID__c", "label": "ContactLineId"},
                {"label": "a map with no field to fill in"},  # skipped, not a failed /init
            ],
        }
    ]
    answer = api.call(
        "/init", {"line_id": "U1", "display_name": "Taro", "prechatEntities": entities}
    )
    assert answer["type"] == "ok"
    customer = next(iter(livechat.customers.values()))
    assert {"Contact.LINE_ID__c": "ContactLineId"} in customer["session_fields"]


def test_init_routes_the_chat_to_the_configured_group(api, livechat, settings):
    livechat.group_statuses[7] = "online"
    settings.LIVECHAT_GROUP_ID = 7
    api.call("/init", {"line_id": "U1"})
    chat = livechat.chats[ChatSession.objects.get(line_id="U1").chat_id]
    assert chat["group_ids"] == [7]
    (get_form,) = livechat.calls_to("get_form")  # that group's pre-chat form, not another's
    assert get_form.body["group_id"] == 7


@pytest.mark.parametrize("back_by", ["/send", "/init"])
def test_a_returning_users_chat_goes_to_the_group_configured_now(
    api, livechat, drain, settings, back_by
):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    livechat.agent_ends_chat(session.chat_id)
    # The operator routes LINE chats to another group from now on.
    livechat.group_statuses[7] = "online"
    settings.LIVECHAT_GROUP_ID = 7
    if back_by == "/init":
        assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    else:
        api.call("/send", {"line_id": "U1", "message": "back again"})
        drain()
    chat = livechat.chats[session.chat_id]
    assert chat["threads"][-1]["active"] and chat["group_ids"] == [7]


def test_a_license_served_from_another_region_is_reached_through_its_redirect(api, livechat, drain):
    # Tokens say `dal:`, but the license lives in `fra`: each call is answered
    # misdirected_request with the region to use, and retried there once.
    livechat.license_region = "fra"
    assert api.call("/init", {"line_id": "U1"})["type"] != "fail"
    api.call("/send", {"line_id": "U1", "message": "hello from afar"})
    drain()
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    assert [e["text"] for e in livechat.events(chat_id) if e["type"] == "message"] == [
        "hello from afar"
    ]
    (sent,) = [call for call in livechat.calls_to("send_event") if call.status == 200]
    assert sent.headers["x-region"] == "fra"


def test_a_customer_token_refused_even_when_fresh_is_renewed_once_not_forever(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    mints = len(livechat.calls_to("customer_token"))
    livechat.fail("send_event", status=401, error_type="authentication", times=10)
    api.call("/send", {"line_id": "U1", "message": "hello"})
    drain()
    # One renewal, then the refusal is the answer: no loop of billed calls.
    assert len(livechat.calls_to("send_event")) == 2
    assert len(livechat.calls_to("customer_token")) == mints + 1


def test_init_answers_fail_when_livechat_is_down(api, livechat):
    livechat.fail("start_chat", status=503, times=5)
    assert api.call("/init", {"line_id": "U1"}) == {
        "type": "fail",
        "message": "ただいま接続できません。",
    }


def test_init_answers_fail_when_livechat_is_not_configured(api, settings):
    settings.LIVECHAT_CLIENT_ID = ""
    assert api.call("/init", {"line_id": "U1"})["type"] == "fail"


def test_a_refresh_token_refused_to_the_wrong_app_is_offered_again_once_the_app_is_fixed(
    api, livechat, settings
):
    # Deployed with the id and secret of another app of the account: LiveChat refuses the
    # refresh token as issued to another client, and the bridge does not offer it again...
    livechat.other_apps = {"staging-app": "staging-secret"}
    settings.LIVECHAT_CLIENT_ID, settings.LIVECHAT_CLIENT_SECRET = "staging-app", "staging-secret"
    assert api.call("/init", {"line_id": "U1"})["type"] == "fail"
    assert api.call("/init", {"line_id": "U1"})["type"] == "fail"
    assert [call.status for call in livechat.calls_to("token")] == [400]

    # ...until the operator corrects the app: then the same token is offered, and chats open.
    settings.LIVECHAT_CLIENT_ID = livechat.client_id
    settings.LIVECHAT_CLIENT_SECRET = livechat.client_secret
    assert api.call("/init", {"line_id": "U1"})["type"] != "fail"
    assert [call.status for call in livechat.calls_to("token")] == [400, 200]
    assert livechat.chat_of(ChatSession.objects.get(line_id="U1").customer_id) is not None


def test_close_ends_the_livechat_chat(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    assert api.call("/close", {"line_id": "U1"}) == {"type": "end", "message": "deleted session"}
    drain()
    assert len(livechat.calls_to("deactivate_chat")) == 1
    assert not livechat.chats[session.chat_id]["threads"][-1]["active"]
    session.refresh_from_db()
    assert session.state == ChatSession.State.ENDED
    # The agent side's chat_deactivated webhook does not come back as a stale "end".
    livechat.post_webhook(
        livechat.make_envelope(
            "chat_deactivated", {"chat_id": session.chat_id, "thread_id": session.thread_id}
        )
    )
    assert api.call("/messages", {"line_id": "U1", "wait": 0.1}) == {"type": "ok", "message": ""}


@pytest.mark.parametrize("groups", ["online", "offline"])
def test_send_after_agent_ended_resumes_the_chat(api, livechat, drain, groups):
    if groups == "offline":
        # Messaging mode: the user's words wait in LiveChat for the first agent to come online.
        livechat.group_statuses = {0: "offline", 1: "offline"}
    assert api.call("/init", {"line_id": "U1"})["type"] != "fail"
    session = ChatSession.objects.get(line_id="U1")
    livechat.agent_ends_chat(session.chat_id)
    api.call("/send", {"line_id": "U1", "message": "one more thing"})
    drain()
    threads = livechat.chats[session.chat_id]["threads"]
    assert len(threads) == 2 and threads[-1]["active"]
    assert [e["text"] for e in threads[-1]["events"] if e["type"] == "message"] == [
        "one more thing"
    ]
    assert len(livechat.calls_to("resume_chat")) == 1
    session.refresh_from_db()
    assert session.state != ChatSession.State.ENDED
    assert session.thread_id == threads[-1]["id"]


def test_the_users_words_are_part_of_the_conversation_not_an_internal_note(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    api.call("/send", {"line_id": "U1", "message": "hello"})
    drain()
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    (event,) = [e for e in livechat.events(chat_id) if e["type"] == "message"]
    assert event["text"] == "hello" and event["visibility"] == "all"


def test_a_send_whose_connection_dropped_after_livechat_took_it_reaches_the_agent_once(
    api, livechat, drain
):
    api.call("/init", {"line_id": "U1"})
    livechat.drop("send_event")  # taken by LiveChat, then the connection closes unanswered
    api.call("/send", {"line_id": "U1", "message": "just once"})
    drain()
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    texts = [e["text"] for e in livechat.events(chat_id) if e["type"] == "message"]
    assert texts == ["just once"]
    assert Message.objects.get(body="just once").status == Message.Status.SENT


def test_a_message_reaches_the_agent_with_its_spaces_and_line_breaks(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    text = "  1. rice\n  2. miso\n\n"
    api.call("/send", {"line_id": "U1", "message": text})
    drain()
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    assert [e["text"] for e in livechat.events(chat_id) if e["type"] == "message"] == [text]


def test_a_poll_before_the_worker_relayed_a_send_neither_echoes_nor_swallows_it(
    api, livechat, drain
):
    api.call("/init", {"line_id": "U1"})
    api.call("/send", {"line_id": "U1", "message": "my order is 42"})
    # What the user said waits for the agent, not for this client.
    assert api.call("/messages", {"line_id": "U1", "wait": 0.2}) == {"type": "ok", "message": ""}
    drain()
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    assert [e["text"] for e in livechat.events(chat_id) if e["type"] == "message"] == [
        "my order is 42"
    ]


def test_polls_racing_for_one_line_id_hand_out_each_reply_once(api, livechat):
    api.call("/init", {"line_id": "U1"})
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    sent = [f"reply {n}" for n in range(20)]
    for text in sent:
        livechat.agent_says(chat_id, text)
    handed_out: list[str] = []
    start = threading.Barrier(6)

    def poll() -> None:
        start.wait(5)
        while answer := api.call("/messages", {"line_id": "U1", "wait": 0})["message"]:
            handed_out.append(answer)

    pollers = [_in_background(poll) for _ in range(6)]
    for thread in pollers:
        thread.join(15)
    assert sorted(handed_out) == sorted(sent)


def test_a_message_sent_before_init_again_still_reaches_the_agent(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    api.call("/send", {"line_id": "U1", "message": "are you there?"})
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"  # before the worker ran
    drain()
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    assert [e["text"] for e in livechat.events(chat_id) if e["type"] == "message"] == [
        "are you there?"
    ]


def test_messages_keep_their_order(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    for n in range(10):
        api.call("/send", {"line_id": "U1", "message": f"m{n}"})
    drain()
    chat = livechat.chats[ChatSession.objects.get(line_id="U1").chat_id]
    assert [e["text"] for e in chat["threads"][-1]["events"] if e["type"] == "message"] == [
        f"m{n}" for n in range(10)
    ]


def test_tokens_are_cached_refreshed_and_rotated(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    first_refresh_token = LiveChatCredential.objects.get().refresh_token
    assert first_refresh_token == livechat.valid_refresh_token != "rt-0"
    for n in range(3):
        api.call("/send", {"line_id": "U1", "message": f"m{n}"})
    drain()
    # Steady state: one LiveChat call per message, no token traffic.
    assert len(livechat.calls_to("token")) == 1
    assert len(livechat.calls_to("customer_token")) == 1
    assert len(livechat.calls_to("send_event")) == 3

    # Every token LiveChat issued dies: the next send mints new ones and still arrives once.
    livechat.expire_tokens()
    api.call("/send", {"line_id": "U1", "message": "after expiry"})
    drain()
    chat = livechat.chats[ChatSession.objects.get(line_id="U1").chat_id]
    texts = [e["text"] for e in chat["threads"][-1]["events"] if e["type"] == "message"]
    assert texts.count("after expiry") == 1
    credential = LiveChatCredential.objects.get()
    assert credential.refresh_token == livechat.valid_refresh_token != first_refresh_token
    session = ChatSession.objects.get(line_id="U1")
    assert len(livechat.customers) == 1  # re-minted for the same customer (entity_id)
    assert session.customer_id in livechat.customers


def test_agent_token_is_refreshed_before_it_expires(api, livechat, drain):
    from datetime import timedelta

    from django.utils import timezone

    api.call("/init", {"line_id": "U1"})
    # Eight hours later, both tokens are about to expire.
    LiveChatCredential.objects.update(access_token_expires_at=timezone.now() + timedelta(minutes=1))
    ChatSession.objects.update(customer_token_expires_at=timezone.now() + timedelta(minutes=1))
    api.call("/send", {"line_id": "U1", "message": "hello"})
    drain()
    assert len(livechat.calls_to("token")) == 2
    assert len(livechat.calls_to("customer_token")) == 2
    assert livechat.calls_to("customer_token")[-1].body["entity_id"] == (
        ChatSession.objects.get().customer_id
    )
    assert Message.objects.get(body="hello").status == Message.Status.SENT


def _in_background(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target)
    thread.start()
    return thread


def test_a_send_while_init_is_still_running_keeps_one_customer_and_chat(api, livechat, drain):
    # /init's customer is made at LiveChat but its answer is slow; meanwhile the user's message
    # makes the worker start the chat with a customer of its own.
    livechat.slow("customer_token", 0.5)
    init = _in_background(lambda: api.call("/init", {"line_id": "U1"}))
    wait_until(lambda: livechat.calls_to("customer_token"))
    assert api.call("/send", {"line_id": "U1", "message": "first"})["type"] == "send"
    drain()
    init.join(10)

    session = ChatSession.objects.get(line_id="U1")
    assert livechat.chats[session.chat_id]["customer_id"] == session.customer_id
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    assert api.call("/send", {"line_id": "U1", "message": "second"})["type"] == "send"
    drain()
    assert [e["text"] for e in livechat.events(session.chat_id) if e["type"] == "message"] == [
        "first",
        "second",
    ]


def test_two_inits_at_once_open_one_chat_and_the_agent_is_heard(api, livechat):
    livechat.slow("customer_token", 0.3, times=2)  # both are making the customer at once
    answers: list[dict] = []
    inits = [
        _in_background(lambda: answers.append(api.call("/init", {"line_id": "U1"})))
        for _ in range(2)
    ]
    for thread in inits:
        thread.join(10)

    assert [a["type"] for a in answers] == ["ok", "ok"]
    assert len(livechat.chats) == 1
    session = ChatSession.objects.get(line_id="U1")
    assert livechat.chats[session.chat_id]["customer_id"] == session.customer_id
    livechat.agent_says(session.chat_id, "Hello, how can I help?")
    assert api.call("/messages", {"line_id": "U1", "wait": 5}) == {
        "type": "message",
        "message": "Hello, how can I help?",
    }


def test_init_after_an_unread_end_does_not_hand_out_that_old_end(api, livechat):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    livechat.agent_ends_chat(session.chat_id)  # while the client was not polling
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    assert livechat.chats[session.chat_id]["threads"][-1]["active"]
    assert api.call("/messages", {"line_id": "U1", "wait": 0.3}) == {"type": "ok", "message": ""}
    livechat.agent_says(session.chat_id, "Welcome back")
    assert api.call("/messages", {"line_id": "U1", "wait": 5})["message"] == "Welcome back"


def test_init_after_a_resume_whose_answer_was_lost_keeps_to_the_resumed_thread(api, livechat):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    livechat.agent_ends_chat(session.chat_id)  # while the client was not polling
    api.call("/send", {"line_id": "U1", "message": "back again"})
    livechat.drop("resume_chat")  # LiveChat resumes the chat; its answer is lost
    delivery.run_once()
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"  # before the worker looks again
    session.refresh_from_db()
    assert session.thread_id == livechat.chats[session.chat_id]["threads"][-1]["id"]
    assert api.call("/messages", {"line_id": "U1", "wait": 0.3}) == {"type": "ok", "message": ""}


def test_a_close_of_a_chat_the_agent_has_just_ended_is_done_not_failed(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    assert api.call("/close", {"line_id": "U1"})["type"] == "end"
    with livechat.webhooks_held():  # the agent's end reaches the bridge only later
        livechat.agent_ends_chat(session.chat_id)
    drain()
    assert len(livechat.calls_to("deactivate_chat")) == 1  # refused: the chat is not active
    close = Message.objects.get(kind=Message.Kind.CLOSE)
    assert close.status == Message.Status.SENT and not close.last_error
    assert not Message.objects.filter(status=Message.Status.FAILED).exists()


def test_init_right_after_close_is_not_closed_by_that_close(api, livechat, drain):
    livechat.echo_customer_events = True  # the deactivation comes back as a webhook too
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    assert api.call("/close", {"line_id": "U1"})["type"] == "end"
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"  # before the worker ran
    drain()
    assert livechat.calls_to("deactivate_chat") == []
    assert livechat.chats[session.chat_id]["threads"][-1]["active"]
    assert api.call("/messages", {"line_id": "U1", "wait": 0.3}) == {"type": "ok", "message": ""}
    assert Message.objects.get(kind=Message.Kind.CLOSE).status == Message.Status.CANCELLED
    # The chat is open again: its end, when the agent ends it, is the client's to hear.
    livechat.agent_ends_chat(session.chat_id)
    assert api.call("/messages", {"line_id": "U1", "wait": 5})["type"] == "end"


def test_init_while_the_worker_carries_out_a_close_keeps_the_next_message_behind_it(
    api, livechat, drain
):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    assert api.call("/close", {"line_id": "U1"})["type"] == "end"
    # A worker has taken the close: it is on its way to LiveChat, too late to call off.
    [close] = delivery.due_heads(delivery.WORKER_ROUTES, limit=8)
    token, rows = delivery.lease(close, batch_size=1)
    assert api.call("/init", {"line_id": "U1"})["type"] == "ok"
    assert api.call("/send", {"line_id": "U1", "message": "one more thing"})["type"] == "send"
    delivery.run_once()  # another worker thread, meanwhile: the message waits for the close
    delivery.deliver(rows, token)
    drain()
    # It reaches the agent in a thread of its own, not the one the close has ended.
    threads = livechat.chats[session.chat_id]["threads"]
    assert len(threads) == 2 and threads[-1]["active"]
    assert [e["text"] for e in threads[-1]["events"] if e["type"] == "message"] == [
        "one more thing"
    ]
    assert Message.objects.get(kind=Message.Kind.CLOSE).status == Message.Status.SENT


def test_a_close_is_carried_out_after_all_when_the_init_after_it_fails(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    assert api.call("/close", {"line_id": "U1"})["type"] == "end"
    livechat.fail("update_customer", status=503)
    assert api.call("/init", {"line_id": "U1"})["type"] == "fail"
    drain()
    assert len(livechat.calls_to("deactivate_chat")) == 1
    assert not livechat.chats[session.chat_id]["threads"][-1]["active"]


def test_an_end_that_comes_while_init_opens_the_chat_is_still_handed_out(api, livechat):
    api.call("/init", {"line_id": "U1"})
    session = ChatSession.objects.get(line_id="U1")
    livechat.slow("get_chat", 1.0)  # /init has been told "active"; the answer is on its way
    answers: list[dict] = []
    init = _in_background(lambda: answers.append(api.call("/init", {"line_id": "U1"})))
    wait_until(lambda: livechat.calls_to("get_chat"))
    livechat.agent_ends_chat(session.chat_id)  # meanwhile
    init.join(10)
    assert answers == [{"type": "ok", "message": "接続しました。"}]
    assert api.call("/messages", {"line_id": "U1", "wait": 1}) == {
        "type": "end",
        "message": "接続が終了しました。",
    }
    session.refresh_from_db()
    assert session.state == ChatSession.State.ENDED


def _send(api, message: str, key: str, line_id: str = "U1"):
    return api.post(
        "/send", {"line_id": line_id, "message": message}, headers={"Idempotency-Key": key}
    )


def _agent_read(livechat, line_id: str = "U1") -> list[str]:
    chat_id = ChatSession.objects.get(line_id=line_id).chat_id
    return [e["text"] for e in livechat.events(chat_id) if e["type"] == "message"]


def test_a_send_retried_with_its_idempotency_key_reaches_the_agent_once(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    first = _send(api, "my order is 42", "3f1c9a7e-key")
    assert first.status_code == 200 and first.json() == {"type": "send", "message": "send"}
    assert "Idempotent-Replayed" not in first.headers
    # The client never got that answer, and sends the same again (the draft's quoted form).
    retry = _send(api, "my order is 42", '"3f1c9a7e-key"')
    assert retry.status_code == 200 and retry.json() == {"type": "send", "message": "send"}
    assert retry.headers["Idempotent-Replayed"] == "true"
    drain()
    assert _agent_read(livechat) == ["my order is 42"]

    # The same words under a new key are the user saying them again.
    assert "Idempotent-Replayed" not in _send(api, "my order is 42", "second-key").headers
    drain()
    assert _agent_read(livechat) == ["my order is 42", "my order is 42"]
    # Keys belong to one line_id: another user's client may pick the same.
    api.call("/init", {"line_id": "U2"})
    assert "Idempotent-Replayed" not in _send(api, "hi", "3f1c9a7e-key", "U2").headers
    drain()
    assert _agent_read(livechat, "U2") == ["hi"]


def test_an_idempotency_key_sent_again_with_other_words_is_refused(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    assert _send(api, "cancel my order", "k-1").status_code == 200
    reused = _send(api, "keep my order", "k-1")
    assert reused.status_code == 422
    assert reused.json() == {
        "type": "bad",
        "message": "Idempotency-Key already used for another message",
    }
    drain()
    assert _agent_read(livechat) == ["cancel my order"]


def test_sends_racing_with_one_idempotency_key_queue_one_message(api, livechat, drain):
    api.call("/init", {"line_id": "U1"})
    answers: list[tuple[int, str | None]] = []
    start = threading.Barrier(10)

    def send() -> None:
        start.wait(5)
        response = _send(api, "are you there?", "race-key")
        answers.append((response.status_code, response.headers.get("Idempotent-Replayed")))

    senders = [_in_background(send) for _ in range(10)]
    for thread in senders:
        thread.join(15)
    assert Counter(answers) == {(200, None): 1, (200, "true"): 9}
    drain()
    assert _agent_read(livechat) == ["are you there?"]
