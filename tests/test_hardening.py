"""Bad input, attacks and edge cases, on every store: each asserts what the
user sees and that nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from datetime import timezone
from uuid import UUID

import pytest
import redis
from conftest import create_app
from conftest import row_count
from flask import Flask
from flask import session
from flask_socketio import SocketIO
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from flask_session_bridge import MemoryStore
from flask_session_bridge import RedisStore
from flask_session_bridge import SessionBridge
from flask_session_bridge import signals
from flask_session_bridge import tokens
from flask_session_bridge.stores.base import Record


def session_count(bridge, app, sids):
    with app.app_context():
        return sum(bridge.get_by_id(sid) is not None for sid in sids)


def test_tampered_cookie_logs_a_security_line(raw_client, store_calls, caplog):
    with caplog.at_level(logging.WARNING, logger="flask_session_bridge"):
        raw_client.get("/me", headers={"Cookie": "session=forged.signature"})
    assert store_calls == []
    assert any("bad or expired signature" in r.getMessage() for r in caplog.records)


def test_anonymous_read_only_and_logout_requests_leave_the_store_unchanged(app, bridge, store):
    saved = []
    alice = app.test_client()
    alice.post("/login/alice")
    stale = app.test_client()
    stale.post("/login/bob")
    stale_cookie = f"session={stale.get_cookie('session').value}"
    stale.post("/logout")  # the store forgets bob's session; the cookie stays valid
    rows = row_count(store)
    client = app.test_client(use_cookies=False)
    with signals.session_saved.connected_to(lambda s, **kw: saved.append(kw), app):
        for _ in range(2500):  # 10,000 requests
            for headers in ({}, {"Cookie": stale_cookie}):
                assert client.get("/me", headers=headers).json["user"] is None
                assert client.post("/logout", headers=headers).status_code == 200
    assert saved == []
    assert row_count(store) == rows
    assert alice.get("/me").json["user"] == "alice"


def test_well_signed_unknown_session_is_anonymous(app, client, store, store_calls):
    forged = tokens.session_signer(app).sign(tokens.new_token()).decode()
    client.set_cookie("session", forged)
    assert client.get("/me").json == {"user": None, "n": None, "items": None, "sid": None}
    assert "save" not in store_calls
    assert row_count(store) == 0


HOSTILE_VALUES = [
    "", "a", "abcdefg", "x" * 10_000, "é" * 64,
    "日本".encode().decode("latin-1"),  # UTF-8 bytes, as a browser sends them
    '"a;b"', '"\\000abc"', "a\x00b",  # a quoted ';', NUL escaped and raw
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_hostile_cookie_values_over_http_and_at_socket_connect(
    app, socketio, raw_client, store, store_calls, value
):
    header = f"session={value}; session.cid={value}"
    response = raw_client.get("/me", headers={"Cookie": header})
    assert response.status_code == 200 and response.json["user"] is None
    for connect in ({"headers": {"Cookie": header}}, {"auth": {"session_token": value}}):
        sc = socketio.test_client(app, **connect)
        if sc.is_connected():  # a bad session token is refused, bad cookies are anonymous
            assert sc.emit("whoami", callback=True)["user"] is None
            sc.disconnect()
        else:
            assert "auth" in connect
    assert store_calls == [] and row_count(store) == 0


@pytest.mark.parametrize("hostile", ["' OR 1=1--", "x'); DROP TABLE bridge_sessions;--",
                                     "../x", "a/b", "*", "s:*"])
def test_stores_keep_hostile_ids_literal(store, hostile):
    # The bridge refuses such ids before any I/O; a store still treats any id
    # as data (bound SQL parameters, prefixed Redis keys), never as syntax.
    others = [f"{i:064x}" for i in (1, 2)]
    for sid in [*others, hostile]:
        token, _ = store.lock(sid, 5, 5)
        store.save(sid, Record("c" * 64, f'{{"id":"{len(sid)}"}}'), 60, token, False)
    assert store.get(hostile).data == f'{{"id":"{len(hostile)}"}}'
    token, _ = store.lock(hostile, 5, 5)
    store.delete(hostile, token)
    assert store.get(hostile) is None
    assert [store.get(sid).data for sid in others] == ['{"id":"64"}'] * 2


def test_a_redis_key_named_like_a_session_id_is_never_read_or_written(redis_server):
    server = redis.Redis.from_url(redis_server.url)
    store = RedisStore(redis_server.url, prefix="app-sessions:")
    app, _socketio, bridge = create_app(store)
    client = app.test_client()
    sid = client.post("/login/alice").json["sid"]
    unrelated = [sid, f"s:{sid}", f"c:{sid}", f"l:{sid}"]  # the store's keys, unprefixed
    for key in unrelated:
        server.set(key, b"the app's own data")
    client.post("/inc")
    with app.app_context():
        assert bridge.get_by_id(sid)["n"] == 1
        assert bridge.destroy_by_id(sid)
    assert [server.get(key) for key in unrelated] == [b"the app's own data"] * 4
    server.delete(*unrelated)


def test_tampered_client_cookie_gets_a_new_client_id(app, client, socketio):
    client.post("/login/alice")
    value = client.get_cookie("session.cid").value
    other = app.test_client()
    other.set_cookie("session.cid", value[:-3] + "AAA")
    response = other.get("/me")
    assert other.get_cookie("session.cid").value != value
    assert response.json["user"] is None
    sc = socketio.test_client(app, flask_test_client=other)
    assert sc.emit("whoami", callback=True)["user"] is None


def test_secret_rotation(store):
    app, socketio, bridge = create_app(store)
    client = app.test_client()
    client.post("/login/alice")
    app.config.update(SECRET_KEY="new secret", SECRET_KEY_FALLBACKS=["test secret"])
    assert client.get("/me").json["user"] == "alice"
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("whoami", callback=True)["user"] == "alice"
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert client.get("/me").json["user"] is None


def test_unserializable_value_over_socket_is_an_error_ack(client, socketio, app, bridge):
    @socketio.on("bad")
    def bad():
        session["n"] = 7
        session["when"] = object()

    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    ack = sc.emit("bad", callback=True)
    assert ack["error"] == "SessionValueError" and "'when'" in ack["message"]
    assert sc.is_connected()
    assert client.get("/me").json["n"] is None


def test_nested_unserializable_value_fails_at_write_back(client, socketio, app):
    @socketio.on("nested-bad")
    def nested_bad():
        session["items"] = []
        session["items"].append({1, 2})

    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    ack = sc.emit("nested-bad", callback=True)
    assert ack["error"] == "SessionValueError" and "'items'" in ack["message"]
    assert client.get("/me").json["items"] is None


def test_nested_unserializable_value_over_http_is_a_500_naming_the_key(app, client, caplog):
    @app.post("/nested-bad")
    def nested_bad():
        session.setdefault("items", []).append({1, 2})
        return "looked fine"

    app.config["TESTING"] = False  # serve the error as a user would see it
    client.post("/login/alice")
    client.post("/inc")
    with caplog.at_level(logging.ERROR):
        response = client.post("/nested-bad")
    assert response.status_code == 500 and b"looked fine" not in response.data
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any("session['items'] cannot be stored" in str(e) for e in logged)
    me = client.get("/me").json
    assert (me["user"], me["n"], me["items"]) == ("alice", 1, None)
    assert client.post("/inc").json["n"] == 2  # the lock was released


def test_corrupt_stored_payload_is_an_empty_session(app, client, bridge, store, caplog):
    sid = client.post("/login/alice").json["sid"]
    with app.app_context():
        client_id = bridge.get_client_id(sid)
    token, _ = store.lock(sid, 5, 5)
    store.save(sid, Record(client_id, "{not json"), 60, token, True)
    with caplog.at_level(logging.ERROR, logger="flask_session_bridge"):
        response = client.get("/me")
    assert response.status_code == 200 and response.json["user"] is None
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    client.post("/inc")
    assert client.get("/me").json["n"] == 1


def test_set_cookie_headers_stay_under_4kb(app, client):
    @app.post("/big")
    def big():
        session["blob"] = "x" * 100_000
        session.permanent = True
        return "ok"

    app.config.update(SESSION_COOKIE_DOMAIN="example.test", SESSION_COOKIE_SECURE=True)
    response = client.post("/big", base_url="https://example.test")
    cookies = response.headers.getlist("Set-Cookie")
    assert cookies and all(len(c) < 4096 for c in cookies)


def test_cookie_flags_and_deletion(app):
    app.config.update(
        SESSION_COOKIE_DOMAIN="example.test",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=True,
    )
    client = app.test_client()
    base = "https://example.test/app"
    created = client.post("/login/alice", base_url=base).headers.getlist("Set-Cookie")
    deleted = client.post("/logout", base_url=base).headers.getlist("Set-Cookie")
    for header in (*created, *deleted):
        for flag in ("HttpOnly", "Secure", "Domain=example.test", "Path=/app", "SameSite=Strict"):
            assert flag in header, (flag, header)
    assert any(h.startswith("session=;") and "Expires=Thu, 01 Jan 1970" in h for h in deleted)


def test_vary_cookie_on_in_and_refresh(app, client):
    @app.get("/has")
    def has():
        return {"has": "user" in session}

    @app.post("/remember")
    def remember():
        session.permanent = True
        session["user"] = "alice"
        return "ok"

    assert "Cookie" in client.get("/has").headers["Vary"]
    client.post("/remember")
    refreshed = client.get("/me")
    assert "Cookie" in refreshed.headers["Vary"]
    assert any(c.startswith("session=") for c in refreshed.headers.getlist("Set-Cookie"))


def test_ids_are_random_and_independent():
    ids = {tokens.public_id(tokens.new_token()) for _ in range(1_000_000)}
    assert len(ids) == 1_000_000
    token = tokens.new_token()
    assert len(tokens.public_id(token)) == 64 and len(token) >= 43  # 256 bits


def test_client_ids_are_independent_of_session_ids(app):
    browser = app.test_client()
    sids, client_ids = set(), set()
    for name in ("alice", "bob", "carol"):  # logins regenerate the session id
        browser.post(f"/login/{name}")
        seen = browser.get("/ids").json
        sids.add(seen["sid"])
        client_ids.add(seen["client_id"])
    assert len(sids) == 3 and len(client_ids) == 1  # one browser, one client id
    others = {app.test_client().get("/ids").json["client_id"] for _ in range(100)}
    assert len(others) == 100 and not others & client_ids and not others & sids


def test_the_bridge_never_widens_allowed_origins():
    for origins in (None, ["https://app.example"]):
        app = Flask(__name__)
        app.config["SECRET_KEY"] = "test secret"
        socketio = SocketIO(app, async_mode="threading", cors_allowed_origins=origins)
        SessionBridge(app, socketio, store=MemoryStore())
        assert socketio.server.eio.cors_allowed_origins == origins
        assert socketio.server_options.get("cors_allowed_origins") == origins


def test_no_pickle_on_the_storage_path(client, app, bridge, store):
    @app.post("/rich")
    def rich():
        session.update(
            when=datetime(2026, 1, 2, tzinfo=timezone.utc),
            pair=(1, 2),
            raw=b"\x00\x01",
            uid=UUID(int=5),
        )
        return {"sid": session.sid}

    sid = client.post("/rich").json["sid"]
    raw = store.get(sid).data
    assert raw.startswith("{") and "pickle" not in raw and "\\x80" not in raw
    with app.app_context():
        data = bridge.get_by_id(sid)
    assert data["pair"] == (1, 2) and data["raw"] == b"\x00\x01" and data["uid"] == UUID(int=5)


def test_logout_during_running_socket_handler_is_not_undone(app, socketio, client):
    started, release = threading.Event(), threading.Event()

    @socketio.on("slow")
    def slow():
        session["n"] = 100
        started.set()
        release.wait(10)
        return "done"

    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    worker = threading.Thread(target=lambda: sc.emit("slow", callback=True))
    worker.start()
    assert started.wait(10)
    logout = threading.Thread(target=lambda: client.post("/logout"))
    logout.start()
    time.sleep(0.2)
    release.set()
    worker.join(10)
    logout.join(10)
    assert client.get("/me").json == {"user": None, "n": None, "items": None, "sid": None}


def test_concurrent_appends_from_http_and_socket_keep_every_item(app, socketio, client):
    @app.post("/append/<item>")
    def append(item):
        session.setdefault("items", []).append(item)
        return "ok"

    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)

    def http_worker():
        for i in range(50):
            client.post(f"/append/h{i}")

    thread = threading.Thread(target=http_worker)
    thread.start()
    for i in range(50):
        sc.emit("append", f"s{i}", callback=True)
    thread.join(60)
    items = client.get("/me").json["items"]
    assert sorted(items) == sorted([f"h{i}" for i in range(50)] + [f"s{i}" for i in range(50)])


def test_lock_released_when_handler_raises_and_other_sessions_never_blocked(app, socketio, bridge):
    @socketio.on("raise")
    def fail():
        session["n"] = 1
        raise RuntimeError("boom")

    socketio.on_error_default(lambda e: {"error": str(e)})
    state = bridge._states[app]
    state.lock_timeout = 0.5
    alice, bob = app.test_client(), app.test_client()
    alice.post("/login/alice")
    bob.post("/login/bob")
    sc = socketio.test_client(app, flask_test_client=alice)
    assert sc.emit("raise", callback=True) == {"error": "boom"}
    assert alice.post("/inc").json["n"] == 1  # not blocked: the lock was released
    sid = alice.get("/me").json["sid"]
    with app.app_context(), bridge.session_scope(sid):
        assert bob.post("/inc").status_code == 200  # another session: never waits
        assert alice.post("/inc").status_code == 503


def test_expired_session_at_connect_and_while_connected(store):
    app, socketio, bridge = create_app(store)
    app.permanent_session_lifetime = 2
    client = app.test_client()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("whoami", callback=True)["user"] == "alice"
    sc.get_received()
    time.sleep(2.2)
    assert sc.emit("whoami", callback=True)["user"] is None
    assert [e["args"][0] for e in sc.get_received()] == [{"reason": "expired"}]
    late = socketio.test_client(app, flask_test_client=client)
    assert late.is_connected() and late.emit("whoami", callback=True)["user"] is None

    app2, socketio2, _ = create_app(store, socket_missing="reject")
    app2.permanent_session_lifetime = 1
    client2 = app2.test_client()
    client2.post("/login/alice")
    time.sleep(1.2)
    assert not socketio2.test_client(app2, flask_test_client=client2).is_connected()


def test_validator_runs_at_connect_before_any_event(store):
    refused = set()
    calls = []
    for missing in ("allow", "reject"):
        app, socketio, bridge = create_app(store, socket_missing=missing)

        @bridge.validator
        def user_exists(s):
            calls.append(s.get("user"))
            return s.get("user") not in refused

        client = app.test_client()
        sid = client.post("/login/alice").json["sid"]
        refused.add("alice")
        calls.clear()
        sc = socketio.test_client(app, flask_test_client=client)
        assert calls == ["alice"]  # at the handshake, no event sent yet
        with app.app_context():
            assert bridge.get_by_id(sid) is None  # the refused session ended
        if missing == "allow":
            assert sc.is_connected() and sc.emit("whoami", callback=True)["user"] is None
            sc.disconnect()
        else:
            assert not sc.is_connected()
        refused.clear()


def test_refused_connects_leave_no_state(store):
    # The Engine.IO side is python-socketio's (its test client never closes
    # refused connections); what the bridge keeps is in the store.
    app, socketio, bridge = create_app(store, socket_missing="reject")
    client = app.test_client()
    client.post("/login/alice")
    client.post("/logout")  # a stale session cookie and a client cookie
    for _ in range(10_000):
        sc = socketio.test_client(app, flask_test_client=client)
        assert not sc.is_connected()
    assert row_count(store) == 0


def test_a_handler_that_outlives_its_lock_blocks_no_one(store):
    app, socketio, bridge = create_app(store, lock_expire=1)
    started = threading.Event()

    @socketio.on("stuck")
    def stuck():
        session["n"] = session.get("n", 0) + 100
        started.set()
        time.sleep(1.5)  # past lock_expire

    client = app.test_client()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    answers = []

    def http_inc():
        started.wait(10)
        answers.append(client.post("/inc").json["n"])

    thread = threading.Thread(target=http_inc)
    thread.start()
    ack = sc.emit("stuck", callback=True)
    thread.join(30)
    assert answers == [1]  # HTTP got the session once the stuck lock expired
    assert ack["error"] == "SessionLockTimeout"  # its late write-back was refused
    assert client.get("/me").json["n"] == 1
    assert sc.emit("inc", callback=True) == 2


# The app is built once per test; each example makes its own clients.
FIXTURE_REUSE = HealthCheck.function_scoped_fixture

cookie_values = st.text(
    alphabet=st.characters(codec="latin-1", exclude_characters=";,\r\n"), max_size=300
)


@settings(max_examples=150, deadline=None, suppress_health_check=[FIXTURE_REUSE])
@given(session_value=cookie_values, client_value=cookie_values)
def test_fuzz_cookie_headers(app, session_value, client_value):
    client = app.test_client(use_cookies=False)
    header = f"session={session_value}; session.cid={client_value}"
    response = client.get("/me", headers={"Cookie": header})
    assert response.status_code == 200
    assert response.json["user"] is None


def containers(children):
    keys = st.sampled_from(["session_token", "token", "x"])
    return st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=3)


auth_payloads = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=200), containers, max_leaves=8
)


@settings(max_examples=100, deadline=None, suppress_health_check=[FIXTURE_REUSE])
@given(auth=auth_payloads, cookie=cookie_values)
def test_fuzz_socket_auth_and_cookies(app, socketio, auth, cookie):
    sc = socketio.test_client(app, auth=auth, headers={"Cookie": f"session={cookie}"})
    if sc.is_connected():
        assert sc.emit("whoami", callback=True)["user"] is None
        sc.disconnect()
