"""Rich conversations over real HTTP: a LINE user's photos, videos, voice messages, files,
stickers and places reach the agent; an agent's pictures and files reach the user; the pre-chat
form tells the agent who is writing; notices speak the user's language."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from sessions_app import delivery
from sessions_app.models import ChatSession, Message
from sessions_app.notices import DEFAULT_TEXTS, notice_text
from tests.fakes.line import image_event, new_webhook_event_id, text_event

FIXTURES = Path(__file__).parent / "fixtures" / "line"
USER = "U" + "2" * 32
MB = 1024 * 1024
CDN = "https://cdn.livechat-files.com/api/file/lc/att/abc123"
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-bytes" * 100


def documented(name: str, *, user: str = USER, **message: Any) -> dict[str, Any]:
    """The documented example event of `name`, from our user, with fields of its message
    replaced (None removes one), and ids of its own so that several can share a test."""
    event = copy.deepcopy(json.loads((FIXTURES / name).read_text())["events"][0])
    event["source"] = {"type": "user", "userId": user}
    event["webhookEventId"] = new_webhook_event_id()
    event["timestamp"] = int(time.time() * 1000)
    for key, value in message.items():
        if value is None:
            event["message"].pop(key, None)
        else:
            event["message"][key] = value
    return event


def session_of(user: str = USER) -> ChatSession:
    return ChatSession.objects.get(line_id=user)


def agent_sees(livechat, user: str = USER) -> list[dict[str, Any]]:
    """The customer's events in their chat, every thread, as the agent sees them."""
    return [e for e in livechat.events(session_of(user).chat_id) if e["type"] != "system_message"]


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in events if e["type"] == "message"]


@pytest.fixture
def profile(line):
    def make(language: str = "en", name: str = "Hanako") -> dict[str, Any]:
        line.profiles[USER] = {"displayName": name, "userId": USER, "language": language}
        return line.profiles[USER]

    return make


@pytest.fixture
def chatting(line, livechat, drain) -> ChatSession:
    """A LINE user who has written once, so that an agent can answer."""
    line.post_events([text_event(USER, "hello")])
    drain()
    return session_of()


# --- LINE → agent: media --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "message", "content", "content_type", "name"),
    [
        ("doc_03_message-image.json", {}, JPEG, "image/jpeg", "354718705033693859.jpg"),
        (
            "doc_05_message-video.json",
            {"contentProvider": {"type": "line"}},
            b"\x00\x00\x00\x18ftypmp42" * 50,
            "video/mp4",
            "325708.mp4",
        ),
        ("doc_06_message-audio.json", {}, b"m4a-audio" * 80, "audio/x-m4a", "325708.m4a"),
        ("doc_07_message-file.json", {}, b"x" * 2138, "text/plain", "file.txt"),
        (
            "doc_07_message-file.json",
            {"fileName": "見積書 (2024).pdf"},
            b"%PDF-1.4",
            "application/pdf",
            "見積書 (2024).pdf",
        ),
    ],
    ids=["image", "video", "audio", "file", "file-with-a-japanese-name"],
)
def test_media_from_line_reaches_the_agent_as_a_file(
    line, livechat, drain, fixture, message, content, content_type, name
):
    event = documented(fixture, **message)
    line.contents[event["message"]["id"]] = (content, content_type)
    assert line.post_events([event])[0] == 200
    # The webhook only stored the message: downloading is the worker's job.
    assert not line.calls_to("/v2/bot/message/") and not livechat.calls

    drain()
    (sent,) = agent_sees(livechat)
    assert sent["type"] == "file" and sent["custom_id"].startswith("bridge-")
    upload = livechat.uploads[sent["url"]]
    assert upload["name"] == name
    assert upload["content"] == content
    assert upload["content_type"] == content_type
    fetched = line.calls_to(f"/v2/bot/message/{event['message']['id']}/content")
    assert len(fetched) == 1 and fetched[0].host == "data"  # api-data.line.me, not api.line.me
    assert fetched[0].headers["authorization"] == f"Bearer {line.channel_access_token}"
    row = Message.objects.get(line_message_id=event["message"]["id"])
    assert row.status == Message.Status.SENT and row.livechat_event_id == sent["id"]


def test_content_hosted_elsewhere_is_sent_as_its_link(line, livechat, drain):
    event = documented("doc_05_message-video.json")  # contentProvider: external
    line.post_events([event])
    drain()
    assert texts(agent_sees(livechat)) == ["[video] https://example.com/original.mp4"]
    assert not line.calls_to("/v2/bot/message/325708/content")
    assert not livechat.calls_to("upload_file")


def test_an_image_set_keeps_its_order(line, livechat, drain):
    now = int(time.time() * 1000)
    image_set = {"id": "E005D41A7288F41B", "total": 3}
    events = [
        image_event(USER, str(700 + n), imageSet={**image_set, "index": n}, timestamp=now + n)
        for n in (1, 2, 3)
    ]
    for event in events:
        line.contents[event["message"]["id"]] = (
            JPEG + event["message"]["id"].encode(),
            "image/jpeg",
        )
    # One delivery in the wrong order, as nothing promises otherwise; then a later delivery.
    line.post_events([events[1], events[0]])
    line.post_events([events[2]])
    drain()
    names = [livechat.uploads[e["url"]]["name"] for e in agent_sees(livechat)]
    assert names == ["701.jpg", "702.jpg", "703.jpg"]


# --- LINE → agent: what cannot be carried as a file -----------------------------------------


def test_an_11_mb_image_becomes_a_note_and_is_not_uploaded(line, livechat, drain):
    event = documented("doc_03_message-image.json")
    line.contents[event["message"]["id"]] = (b"\xff" * (11 * MB), "image/jpeg")
    line.post_events([event])
    drain()
    assert texts(agent_sees(livechat)) == [
        "[image 1/2] 354718705033693859.jpg (11.0 MB): too large to forward, "
        "LiveChat takes files up to 10.0 MB"
    ]
    assert not livechat.calls_to("upload_file")


def test_content_without_a_length_is_read_only_up_to_the_limit(line, livechat, drain, settings):
    settings.LIVECHAT_UPLOAD_MAX_BYTES = 1 * MB
    event = documented("doc_06_message-audio.json")
    line.contents["325708"] = (b"a" * (3 * MB), "audio/x-m4a")
    line.unsized.add("325708")
    line.post_events([event])
    drain()
    (note,) = texts(agent_sees(livechat))
    assert note.startswith("[audio] 325708.m4a (over 1.0 MB): too large to forward")
    assert not livechat.calls_to("upload_file")


def test_a_file_larger_than_the_limit_is_not_even_downloaded(line, livechat, drain):
    event = documented("doc_07_message-file.json", fileName="site-backup.zip", fileSize=11 * MB)
    line.post_events([event])
    drain()
    assert texts(agent_sees(livechat)) == [
        "[file] site-backup.zip (11.0 MB): too large to forward, LiveChat takes files up to 10.0 MB"
    ]
    assert not line.calls_to("/v2/bot/message/325708/content")


def test_a_file_of_exactly_the_limit_is_forwarded(line, livechat, drain):
    event = documented("doc_07_message-file.json", fileName="exact.bin", fileSize=10 * MB)
    line.contents["325708"] = (b"\x01" * (10 * MB), "application/octet-stream")
    line.post_events([event])
    drain()
    (sent,) = agent_sees(livechat)
    assert sent["type"] == "file" and livechat.uploads[sent["url"]]["size"] == 10 * MB


def test_livechat_refusing_the_size_gives_a_note(line, livechat, drain):
    event = documented("doc_07_message-file.json")
    line.contents["325708"] = (b"x" * 2138, "text/plain")
    livechat.fail("upload_file", status=413, error_type="entity_too_large")
    line.post_events([event])
    drain()
    (note,) = texts(agent_sees(livechat))
    assert note.startswith("[file] file.txt (2 KB): too large to forward")


@pytest.mark.parametrize("status", [410, 404])
def test_content_that_is_gone_becomes_a_readable_note(line, livechat, drain, status):
    event = documented("doc_03_message-image.json")
    if status == 410:
        line.gone.add(event["message"]["id"])  # unsent, or expired
    line.post_events([event])
    drain()
    assert texts(agent_sees(livechat)) == ["[image 1/2] (no longer available on LINE)"]
    row = Message.objects.get(line_message_id=event["message"]["id"])
    assert row.status == Message.Status.SENT and row.attempts == 1


def test_a_file_that_is_gone_is_still_named_to_the_agent(line, livechat, drain):
    # The agent cannot open it, but can ask the user for "file.txt" by its name.
    event = documented("doc_07_message-file.json")  # LINE has no content for it (404)
    line.post_events([event])
    drain()
    assert texts(agent_sees(livechat)) == ["[file] file.txt (no longer available on LINE)"]


def test_a_download_cut_off_midway_is_tried_again(line, livechat, drain):
    # A dropped connection says nothing about the content: it is fetched again, not reported
    # to the agent as gone.
    event = documented("doc_03_message-image.json")
    line.contents[event["message"]["id"]] = (JPEG, "image/jpeg")
    line.fail(f"/v2/bot/message/{event['message']['id']}/content", status=0, times=1)
    line.post_events([event])
    drain()
    (sent,) = agent_sees(livechat)
    assert sent["type"] == "file" and livechat.uploads[sent["url"]]["content"] == JPEG
    row = Message.objects.get(line_message_id=event["message"]["id"])
    assert row.status == Message.Status.SENT and row.attempts == 2


@pytest.mark.parametrize(
    ("piece", "every", "sized"),
    # 1,004 bytes over ~6 s: a slow network; or half of it, then a stall.
    [(34, 0.2, True), (500, 6.0, True), (34, 0.2, False)],
    ids=["trickling", "stalled", "trickling-without-a-length"],
)
def test_a_download_slower_than_its_time_limit_is_given_up_and_tried_again(
    line, livechat, drain, settings, piece, every, sized
):
    # LINE_CONTENT_DOWNLOAD_SECONDS bounds one download in all, not each read: a body that keeps
    # coming, a little at a time, must not hold the user's chat for as long as it trickles.
    settings.LINE_CONTENT_DOWNLOAD_SECONDS = 1
    event = documented("doc_03_message-image.json")
    content = f"/v2/bot/message/{event['message']['id']}/content"
    line.contents[event["message"]["id"]] = (JPEG, "image/jpeg")
    if not sized:
        line.unsized.add(event["message"]["id"])  # cut off, it would look whole
    line.trickle(content, piece=piece, every=every, times=1)
    line.post_events([event])
    line.post_events([text_event(USER, "did the photo arrive?")])
    line.post_events([text_event(USER, "it is the receipt")])

    started = time.monotonic()
    delivery.run_once()  # the worker's first try: the download, given up
    assert time.monotonic() - started < 2.5  # the whole body would have taken 6 s
    row = Message.objects.get(line_message_id=event["message"]["id"])
    assert row.status == Message.Status.PENDING and row.attempts == 1
    assert "download took over 1 s" in row.last_error
    assert not livechat.calls_to("upload_file")

    drain()  # LINE answers at full speed again
    seen = agent_sees(livechat)
    assert [e["type"] for e in seen] == ["file", "message", "message"]
    assert livechat.uploads[seen[0]["url"]]["content"] == JPEG
    assert texts(seen) == ["did the photo arrive?", "it is the receipt"]
    assert [c.status for c in line.calls_to(content)] == [200, 200]
    row.refresh_from_db()
    assert row.status == Message.Status.SENT and row.attempts == 2


def test_a_slow_download_within_its_time_limit_arrives_whole(line, livechat, drain, settings):
    settings.LINE_CONTENT_DOWNLOAD_SECONDS = 5
    event = documented("doc_07_message-file.json", fileName="scan.pdf")
    # 200 KB, more than one read's worth, in 16 KB pieces over about 0.6 s.
    data = bytes(range(256)) * 800
    line.contents["325708"] = (data, "application/pdf")
    line.trickle("/v2/bot/message/325708/content", piece=16 * 1024, every=0.05)
    line.post_events([event])
    started = time.monotonic()
    drain()
    assert time.monotonic() - started > 0.5  # it did trickle
    (sent,) = agent_sees(livechat)
    upload = livechat.uploads[sent["url"]]
    assert (upload["name"], upload["content"]) == ("scan.pdf", data)
    row = Message.objects.get(line_message_id="325708")
    assert row.status == Message.Status.SENT and row.attempts == 1


def test_a_content_type_with_parameters_is_read_as_its_media_type(line, livechat, drain):
    event = documented("doc_03_message-image.json")
    line.contents[event["message"]["id"]] = (b"\x89PNG\r\n\x1a\n" * 10, "image/PNG; charset=binary")
    line.post_events([event])
    drain()
    (sent,) = agent_sees(livechat)
    upload = livechat.uploads[sent["url"]]
    assert (upload["name"], upload["content_type"]) == ("354718705033693859.png", "image/png")


def test_content_still_being_prepared_is_fetched_once_ready(line, livechat, drain):
    event = documented("doc_05_message-video.json", contentProvider={"type": "line"})
    line.contents["325708"] = (b"video" * 100, "video/mp4")
    line.preparing["325708"] = 2  # two 202 answers, then the video
    line.post_events([event])
    drain()
    (sent,) = agent_sees(livechat)
    assert sent["type"] == "file" and livechat.uploads[sent["url"]]["name"] == "325708.mp4"
    assert [c.status for c in line.calls_to("/v2/bot/message/325708/content")] == [202, 202, 200]
    row = Message.objects.get(line_message_id="325708")
    assert row.attempts == 3 and row.status == Message.Status.SENT and not row.last_error


def test_content_never_ready_becomes_a_note_after_the_wait(line, livechat, drain, settings):
    settings.LINE_CONTENT_MAX_WAIT_SECONDS = 0.3
    line.post_events([documented("doc_06_message-audio.json")])
    line.contents["325708"] = (b"audio", "audio/x-m4a")
    line.preparing["325708"] = 1000
    drain()
    assert texts(agent_sees(livechat)) == ["[audio] (LINE was still preparing it; not forwarded)"]
    assert 1 < len(line.calls_to("/v2/bot/message/325708/content")) < 20


def test_a_failed_send_reuses_the_upload(line, livechat, drain):
    event = documented("doc_03_message-image.json")
    line.contents[event["message"]["id"]] = (JPEG, "image/jpeg")
    livechat.fail("start_chat", status=503, times=1)
    line.post_events([event])
    drain()
    assert [e["type"] for e in agent_sees(livechat)] == ["file"]
    assert len(livechat.calls_to("upload_file")) == 1
    assert len(line.calls_to(f"/v2/bot/message/{event['message']['id']}/content")) == 1


def test_a_timed_out_send_that_livechat_took_is_not_sent_twice(line, livechat, drain, settings):
    line.post_events([text_event(USER, "first")])
    drain()
    event = documented("doc_07_message-file.json")
    line.contents["325708"] = (b"x" * 2138, "text/plain")
    settings.VENDOR_TIMEOUT = (1.0, 0.3)
    livechat.slow("send_event", 1.0)
    line.post_events([event])
    drain()
    time.sleep(1.0)  # let the slow answer finish on the fake's side
    assert [e["type"] for e in agent_sees(livechat)] == ["message", "file"]
    assert len(livechat.calls_to("upload_file")) == 1
    assert Message.objects.get(line_message_id="325708").attempts == 2  # the retry checked first


# --- LINE → agent: stickers and places ------------------------------------------------------


def test_sticker_reaches_the_agent_as_its_keywords(line, livechat, drain):
    line.post_events([documented("doc_09_message-sticker.json")])  # ANIMATION: no still link
    drain()
    assert texts(agent_sees(livechat)) == ["[sticker] cony, sally, Staring, hi, whatsup"]


def test_static_sticker_comes_with_a_link_to_its_image(line, livechat, drain):
    line.post_events([documented("doc_09_message-sticker.json", stickerResourceType="STATIC")])
    drain()
    assert texts(agent_sees(livechat)) == [
        "[sticker] cony, sally, Staring, hi, whatsup\n"
        "https://stickershop.line-scdn.net/stickershop/v1/sticker/52002738/android/sticker.png"
    ]


def test_message_sticker_reaches_the_agent_as_its_text(line, livechat, drain):
    line.post_events([documented("doc_10_message-sticker.json")])
    drain()
    assert texts(agent_sees(livechat)) == ["[sticker] Let's\nhang out\nthis weekend!"]


def test_location_reaches_the_agent_with_a_map_link(line, livechat, drain):
    line.post_events([documented("doc_08_message-location.json")])
    drain()
    assert texts(agent_sees(livechat)) == [
        "[location] my location\n"
        "1-3 Kioicho, Chiyoda-ku, Tokyo, 102-8282 Japan\n"
        "https://www.google.com/maps/search/?api=1&query=35.67966,139.73669"
    ]


# --- agent → LINE ---------------------------------------------------------------------------


def received(line) -> list[dict[str, Any]]:
    return list(line.received.get(USER, []))


def test_agent_photo_arrives_as_a_line_image(line, livechat, drain, chatting):
    livechat.agent_sends_file(
        chatting.chat_id,
        url=f"{CDN}/photo.jpg",
        name="photo.jpg",
        content_type="image/jpeg",
        size=300_000,
        thumbnail_url=f"{CDN}/photo_thumb.jpg",
    )
    drain()
    assert received(line) == [
        {
            "type": "image",
            "originalContentUrl": f"{CDN}/photo.jpg",
            "previewImageUrl": f"{CDN}/photo_thumb.jpg",
        }
    ]


def test_agent_png_without_a_thumbnail_previews_itself(line, livechat, drain, chatting):
    # Over LINE's 1 MB preview limit, and no thumbnail: the image itself is the best we have.
    livechat.agent_sends_file(
        chatting.chat_id,
        url=f"{CDN}/chart.png",
        name="chart.png",
        content_type="image/png",
        size=2 * MB,
        thumbnail_url="http://insecure.example/chart.png",
    )
    drain()
    assert received(line) == [
        {
            "type": "image",
            "originalContentUrl": f"{CDN}/chart.png",
            "previewImageUrl": f"{CDN}/chart.png",
        }
    ]


@pytest.mark.parametrize(("length", "kind"), [(2000, "image"), (2001, "text")])
def test_an_agent_photo_url_up_to_2000_characters_arrives_as_an_image(
    line, livechat, drain, chatting, length, kind
):
    # LINE takes image URLs of up to 2,000 characters; a longer one goes as a link.
    url = f"{CDN}/" + "p" * (length - len(CDN) - 5) + ".jpg"
    assert len(url) == length
    livechat.agent_sends_file(
        chatting.chat_id, url=url, name="photo.jpg", content_type="image/jpeg", size=300_000
    )
    drain()
    (message,) = received(line)
    assert message["type"] == kind
    if kind == "image":
        assert message["originalContentUrl"] == message["previewImageUrl"] == url
    else:
        assert message["text"] == f"photo.jpg {url}"


@pytest.mark.parametrize(
    ("name", "content_type", "size"),
    [
        ("manual.pdf", "application/pdf", 80_000),
        ("huge.jpg", "image/jpeg", 11 * MB),
        ("anim.gif", "image/gif", 50_000),
    ],
)
def test_other_agent_files_arrive_as_links(
    line, livechat, drain, chatting, name, content_type, size
):
    livechat.agent_sends_file(
        chatting.chat_id, url=f"{CDN}/{name}", name=name, content_type=content_type, size=size
    )
    drain()
    assert received(line) == [{"type": "text", "text": f"{name} {CDN}/{name}"}]


def test_pull_sessions_get_an_agent_file_as_name_and_link(api, livechat):
    api.call("/init", {"line_id": "U1"})
    chat_id = ChatSession.objects.get(line_id="U1").chat_id
    livechat.agent_sends_file(
        chat_id, url=f"{CDN}/photo.jpg", name="photo.jpg", content_type="image/jpeg", size=1000
    )
    assert api.call("/messages", {"line_id": "U1", "wait": 2}) == {
        "type": "message",
        "message": f"photo.jpg {CDN}/photo.jpg",
    }


def test_internal_notes_never_reach_the_user(line, livechat, drain, chatting):
    livechat.agent_says(chatting.chat_id, "VIP customer, be nice", visibility="agents")
    thread_id = livechat.chats[chatting.chat_id]["threads"][-1]["id"]
    note_file = {
        "id": f"{thread_id}_99",
        "type": "file",
        "url": f"{CDN}/internal.png",
        "name": "internal.png",
        "content_type": "image/png",
        "size": 1000,
        "visibility": "agents",
        "author_id": "agent@example.com",
    }
    livechat.post_webhook(
        livechat.make_envelope(
            "incoming_event",
            {"chat_id": chatting.chat_id, "thread_id": thread_id, "event": note_file},
        )
    )
    livechat.agent_says(chatting.chat_id, "How can I help?")
    drain()
    assert received(line) == [{"type": "text", "text": "How can I help?"}]


# --- pre-chat answers -----------------------------------------------------------------------

PRECHAT_FORM = {
    "id": "156630109416307809",
    "fields": [
        {"id": "1", "type": "header", "label": "Welcome to the chat!"},
        {"id": "2", "type": "name", "label": "Name:", "required": True},
        {"id": "3", "type": "email", "label": "E-mail:", "required": False},
        {"id": "4", "type": "question", "label": "LINE ID"},
        {"id": "5", "type": "question", "label": "Order number"},
        {"id": "6", "type": "textarea", "label": "What can we help you with?"},
        {
            "id": "7",
            "type": "radio",
            "label": "Topic",
            "options": [{"id": "0", "label": "Support"}, {"id": "1", "label": "Sales"}],
        },
    ],
}
ENTITIES = [
    {
        "entityName": "Contact",
        "saveToTranscript": "ContactId",
        "entityFieldsMaps": [{"fieldName": "Order_Number__c", "label": "A-1234"}],
    }
]


def test_init_answers_the_groups_prechat_form(api, livechat):
    livechat.prechat_form = PRECHAT_FORM
    api.call("/init", {"line_id": "U1", "display_name": "Taro", "prechatEntities": ENTITIES})
    session = ChatSession.objects.get(line_id="U1")
    (form,) = livechat.events(session.chat_id)
    assert form["type"] == "filled_form" and form["form_id"] == PRECHAT_FORM["id"]
    assert [(f["id"], f["type"], f["label"], f["answer"]) for f in form["fields"]] == [
        ("2", "name", "Name:", "Taro"),
        ("3", "email", "E-mail:", ""),
        ("4", "question", "LINE ID", "U1"),
        ("5", "question", "Order number", "A-1234"),
        ("6", "textarea", "What can we help you with?", ""),
    ]
    (get_form,) = livechat.calls_to("get_form")
    assert get_form.body == {"group_id": 0, "type": "prechat"}
    fields = livechat.customers[session.customer_id]["session_fields"]
    for field in ({"line_id": "U1"}, {"source": "LINE"}, {"Contact.Order_Number__c": "A-1234"}):
        assert field in fields

    api.call("/init", {"line_id": "U1", "display_name": "Taro"})  # the chat is already open
    assert len(livechat.calls_to("get_form")) == 1


def test_a_question_asking_for_an_e_mail_is_answered_with_the_users_e_mail(api, livechat):
    livechat.prechat_form = {
        "id": "156630109416307810",
        "fields": [{"id": "1", "type": "question", "label": "Your e-mail address"}],
    }
    entities = [
        {
            "entityName": "Contact",
            "entityFieldsMaps": [{"fieldName": "Email", "label": "taro@example.com"}],
        }
    ]
    api.call("/init", {"line_id": "U1", "display_name": "Taro", "prechatEntities": entities})
    (form,) = livechat.events(ChatSession.objects.get(line_id="U1").chat_id)
    assert [(f["label"], f["answer"]) for f in form["fields"]] == [
        ("Your e-mail address", "taro@example.com")
    ]


def test_init_without_a_prechat_form_sends_session_fields_only(api, livechat):
    api.call("/init", {"line_id": "U1", "display_name": "Taro", "prechatEntities": ENTITIES})
    session = ChatSession.objects.get(line_id="U1")
    assert livechat.events(session.chat_id) == []
    assert len(livechat.calls_to("get_form")) == 1  # answered {"enabled": false}
    assert {"Contact.Order_Number__c": "A-1234"} in livechat.customers[session.customer_id][
        "session_fields"
    ]


def test_a_line_user_s_first_message_comes_after_the_filled_form(line, livechat, drain, profile):
    profile("en", name="Hanako")
    livechat.prechat_form = PRECHAT_FORM
    line.post_events([text_event(USER, "Is my order shipped?")])
    drain()
    form, message = agent_sees(livechat)
    assert form["type"] == "filled_form"
    answers = {f["label"]: f["answer"] for f in form["fields"]}
    assert answers["Name:"] == "Hanako" and answers["LINE ID"] == USER
    assert message["text"] == "Is my order shipped?"
    assert Message.objects.get(body="Is my order shipped?").livechat_event_id == message["id"]
    customer = livechat.customers[session_of().customer_id]
    assert {"display_name": "Hanako"} in customer["session_fields"]
    assert {"language": "en"} in customer["session_fields"]

    line.post_events([text_event(USER, "Thanks")])  # steady state: no more form look-ups
    drain()
    assert len(livechat.calls_to("get_form")) == 1


def test_a_line_user_s_chat_starts_without_a_form_when_the_group_has_none(line, livechat, drain):
    line.post_events([text_event(USER, "hi")])
    drain()
    assert [e["type"] for e in agent_sees(livechat)] == ["message"]


def test_the_form_look_up_can_be_switched_off(line, livechat, drain, settings):
    settings.LIVECHAT_PRECHAT_FORM = False
    livechat.prechat_form = PRECHAT_FORM
    line.post_events([text_event(USER, "hi")])
    drain()
    assert [e["type"] for e in agent_sees(livechat)] == ["message"]
    assert not livechat.calls_to("get_form")


def test_a_form_livechat_cannot_look_up_does_not_hold_the_chat_back(api, livechat):
    livechat.prechat_form = PRECHAT_FORM
    livechat.fail("get_form", status=503)
    assert api.call("/init", {"line_id": "U1", "display_name": "Taro"})["type"] == "ok"
    session = ChatSession.objects.get(line_id="U1")
    assert livechat.chats[session.chat_id]["threads"][-1]["active"]
    assert livechat.events(session.chat_id) == []  # started without the form


def test_a_refused_form_does_not_hold_the_message_back(line, livechat, drain):
    livechat.prechat_form = PRECHAT_FORM
    livechat.fail("start_chat", status=400, error_type="validation")
    line.post_events([text_event(USER, "hi")])
    drain()
    assert [e["type"] for e in agent_sees(livechat)] == ["message"]
    assert Message.objects.get(body="hi").status == Message.Status.SENT


# --- notices --------------------------------------------------------------------------------

NOTICES = {
    "en": [
        "We are connecting you to an agent. You are number 3 in the queue.",
        "Agent Smith has joined the chat.",
        "We are transferring you to another agent.",
        "We are transferring you to another agent. You are number 2 in the queue.",
        "The chat has ended.",
    ],
    "ja": [
        "担当者におつなぎしています。現在3番目です。",
        "Agent Smithが対応いたします。",
        "別の担当者におつなぎしています。",
        "別の担当者におつなぎしています。現在2番目です。",
        "接続が終了しました。",
    ],
}


@pytest.mark.parametrize("language", ["en", "ja"])
def test_notices_follow_the_chat_in_the_user_s_language(line, livechat, drain, profile, language):
    profile(language)
    livechat.echo_customer_events = True  # incoming_chat, as LiveChat sends for a new chat
    livechat.next_queue = {"position": 3, "wait_time": 120}
    line.post_events([text_event(USER, "hi")])
    drain()
    chat_id = session_of().chat_id
    livechat.agent_joins(chat_id, name="Agent Smith")
    livechat.transfer(chat_id)
    livechat.transfer(chat_id, queue={"position": 2, "wait_time": 60})
    livechat.agent_ends_chat(chat_id)
    drain()
    assert line.texts_for(USER) == NOTICES[language]


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "We are connecting you to an agent. Please wait a moment."),
        ("ja", "担当者におつなぎしています。しばらくお待ちください。"),
    ],
)
def test_a_chat_nobody_has_taken_yet_is_acknowledged(
    line, livechat, drain, profile, language, text
):
    profile(language)
    livechat.echo_customer_events = True
    line.post_events([text_event(USER, "hi")])
    drain()
    assert line.texts_for(USER) == [text]


def test_an_agent_announced_at_the_start_is_not_announced_twice(line, livechat, drain, profile):
    profile("en")
    line.post_events([text_event(USER, "hi")])
    drain()
    session = session_of()
    livechat.post_webhook(
        livechat.make_envelope(
            "incoming_chat",
            {
                "chat": {
                    "id": session.chat_id,
                    "users": [
                        {"id": session.customer_id, "type": "customer"},
                        {"id": "agent@example.com", "type": "agent", "name": "Agent Smith"},
                    ],
                    "thread": {"id": session.thread_id, "events": []},
                }
            },
        )
    )
    livechat.agent_joins(session.chat_id, name="Agent Smith")
    drain()
    assert line.texts_for(USER) == ["Agent Smith has joined the chat."]


def test_init_with_push_learns_the_language_from_the_profile(api, line, livechat, drain, profile):
    profile("en")["pictureUrl"] = "https://profile.line-scdn.net/abc"
    api.call("/init", {"line_id": USER, "display_name": "Client's name", "delivery": "push"})
    session = session_of()
    assert session.language == "en" and session.display_name == "Client's name"
    assert livechat.customers[session.customer_id]["avatar"] == "https://profile.line-scdn.net/abc"
    livechat.agent_ends_chat(session.chat_id)
    drain()
    assert line.texts_for(USER) == ["The chat has ended."]


def test_init_again_with_push_sends_the_agents_replies_to_line(api, line, livechat, drain, profile):
    profile("en")
    api.call("/init", {"line_id": USER, "display_name": "Client's name"})  # pulled by /messages
    api.call("/init", {"line_id": USER, "delivery": "push"})  # the client switches, no name
    session = session_of()
    assert session.display_name == "Client's name"  # the client's name still wins
    assert livechat.customers[session.customer_id]["name"] == "Client's name"
    livechat.agent_says(session.chat_id, "Pushed to you")
    drain()
    assert line.texts_for(USER) == ["Pushed to you"]


def test_init_with_push_calls_off_an_unsent_end_but_not_the_reply_before_it(
    api, line, livechat, drain
):
    api.call("/init", {"line_id": USER, "delivery": "push"})
    chat_id = session_of().chat_id
    livechat.agent_says(chat_id, "Anything else?")
    livechat.agent_ends_chat(chat_id)
    # The user is back before the worker pushed either: the end of that chat is called off.
    assert api.call("/init", {"line_id": USER, "delivery": "push"})["type"] == "ok"
    drain()
    assert line.texts_for(USER) == ["Anything else?"]


def test_notice_languages_and_overrides(settings):
    assert notice_text("ended", "en-US") == "The chat has ended."
    assert notice_text("ended", "ko") == "The chat has ended."  # no Korean text: English
    assert notice_text("ended", "") == "接続が終了しました。"
    settings.BRIDGE_DEFAULT_LANGUAGE = "en"
    assert notice_text("ended", "") == "The chat has ended."
    settings.BRIDGE_NOTICE_TEXTS = {
        "ended": {"ko": "상담이 종료되었습니다.", "ja": "終了しました。"},
        "agent_joined": {"en": "{agent} is here."},  # a placeholder that does not exist
    }
    assert notice_text("ended", "ko") == "상담이 종료되었습니다."
    assert notice_text("ended", "ja") == "終了しました。"
    assert notice_text("ended", "en") == "The chat has ended."
    assert notice_text("agent_joined", "en", name="Ann") == "Ann has joined the chat."


def test_notice_overrides_match_languages_in_any_spelling(settings):
    settings.BRIDGE_DEFAULT_LANGUAGE = "en-US"
    assert notice_text("ended", "") == "The chat has ended."  # its English, not Japanese
    settings.BRIDGE_NOTICE_TEXTS = {
        "ended": {"zh_TW": "對話已結束。", "PT-br": "Conversa encerrada.", "de": "Chat beendet."},
        "queued": {"en": "Number {0}."},  # positional: nothing to fill it with
        "transferred": {"en": "Transferring {"},  # not a valid template
        "greeting": {"en": ["not", "a", "text"]},
    }
    # LINE says zh-TW, pt-BR or de-AT; the operator wrote zh_TW, PT-br and de.
    assert notice_text("ended", "zh-TW") == "對話已結束。"
    assert notice_text("ended", "pt-BR") == "Conversa encerrada."
    assert notice_text("ended", "de-AT") == "Chat beendet."
    # A broken override falls back to the built-in text rather than losing the notice.
    assert notice_text("queued", "en") == DEFAULT_TEXTS["queued"]["en"]
    assert notice_text("transferred", "en") == DEFAULT_TEXTS["transferred"]["en"]
    assert notice_text("greeting", "en") == DEFAULT_TEXTS["greeting"]["en"]
