"""Bad input, attacks and edge cases, on every store: each asserts what the
user sees and that nothing is lost.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
from flask import flash
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
from flask_session_bridge import SessionValueError
from flask_session_bridge import signals
from flask_session_bridge import StoreUnavailable
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


def test_secret_rotation_re_signs_cookies_of_browsers_that_come_back(store, caplog):
    app, socketio, bridge = create_app(store)
    returning, away = app.test_client(), app.test_client()
    returning.post("/login/alice")
    away.post("/login/bob")
    app.config.update(SECRET_KEY="new secret", SECRET_KEY_FALLBACKS=["test secret"])
    response = returning.get("/me")
    assert response.json["user"] == "alice"
    resent = {c.split("=")[0] for c in response.headers.getlist("Set-Cookie")}
    assert resent == {"session", "session.cid"}  # both signed with the new key
    sc = socketio.test_client(app, flask_test_client=returning)
    assert sc.emit("whoami", callback=True)["user"] == "alice"
    assert "Set-Cookie" not in returning.get("/me").headers  # once is enough
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert returning.get("/me").json["user"] == "alice"
    sc = socketio.test_client(app, flask_test_client=returning)
    assert sc.emit("whoami", callback=True)["user"] == "alice"
    with caplog.at_level(logging.WARNING, logger="flask_session_bridge"):
        assert away.get("/me").json["user"] is None  # stayed away: logged out
    lines = [r.getMessage() for r in caplog.records]
    assert "refused a session cookie with a bad or expired signature" in lines


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


def test_tokens_carry_256_bits_and_ids_are_their_sha256():
    token = tokens.new_token()
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    assert tokens.public_id(token) == hashlib.sha256(token.encode()).hexdigest()


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


def test_concurrent_appends_from_http_and_socket_keep_every_item(app, socketio, client):
    @app.post("/append/<item>")
    def append(item):
        session.setdefault("items", []).append(item)
        return "ok"

    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)

    acked = []

    def http_worker():
        for i in range(500):
            if client.post(f"/append/h{i}").status_code == 200:
                acked.append(f"h{i}")

    thread = threading.Thread(target=http_worker)
    thread.start()
    for i in range(500):
        if isinstance(sc.emit("append", f"s{i}", callback=True), list):
            acked.append(f"s{i}")
    thread.join(120)
    assert len(acked) == 1000  # every append acknowledged, and every one stored
    assert sorted(client.get("/me").json["items"]) == sorted(acked)


def test_lock_released_when_handler_raises_and_other_sessions_never_blocked(app, socketio, bridge):
    @socketio.on("raise")
    def fail():
        session["n"] = 1
        raise RuntimeError("boom")

    socketio.on_error_default(lambda e: {"error": str(e)})
    state = bridge._states[app]
    state.options = dataclasses.replace(state.options, lock_timeout=0.5)
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


def test_a_handler_that_outlives_its_lock_blocks_no_one(store, monkeypatch):
    app, socketio, bridge = create_app(store, lock_expire=1)
    # A holder whose lease is not renewed (its process stalled): the lock
    # frees itself after lock_expire.
    monkeypatch.setattr(bridge._states[app].leases, "hold", lambda *args: None)
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


# -- issue 11: a socket never enters a session it did not present ----------


def events(sc, name="session_ended"):
    return [e["args"][0] for e in sc.get_received() if e["name"] == name]


def test_planted_client_cookie_socket_never_reaches_the_victims_login(app, socketio, bridge):
    # The attacker plants only its client cookie in the victim's browser and
    # keeps a socket open with the same cookie.
    attacker = app.test_client()
    attacker.get("/me")
    victim = app.test_client()
    victim.set_cookie("session.cid", attacker.get_cookie("session.cid").value)
    sc = socketio.test_client(app, flask_test_client=attacker)
    assert sc.emit("whoami", callback=True) == {"user": None, "n": None, "sid": None}
    sid = victim.post("/login/victim").json["sid"]
    victim.post("/inc")
    assert sc.emit("whoami", callback=True) == {"user": None, "n": None, "sid": None}
    assert sc.emit("set", "planted", "by attacker", callback=True)["error"] == "SessionMissing"
    with app.app_context():
        assert bridge.get_by_id(sid) == {"user": "victim", "n": 1}
    # Nor does a socket the attacker opens later: it has no session cookie.
    late = socketio.test_client(app, flask_test_client=attacker)
    assert late.emit("whoami", callback=True)["sid"] is None


def test_session_cookie_counts_only_with_its_client_cookie(app, socketio):
    victim = app.test_client()
    victim.post("/login/victim")
    thief = app.test_client()
    thief.get("/me")  # a client cookie of its own
    thief.set_cookie("session", victim.get_cookie("session").value)
    sc = socketio.test_client(app, flask_test_client=thief)
    assert sc.emit("whoami", callback=True)["user"] is None


def test_session_cookie_with_no_or_another_client_cookie_never_grows_the_store(app, store):
    saved = []
    browser = app.test_client()
    browser.post("/login/alice")
    session_cookie = f"session={browser.get_cookie('session').value}"
    other = app.test_client()
    other.get("/me")
    other_cid = f"session.cid={other.get_cookie('session.cid').value}"
    rows = row_count(store)
    raw = app.test_client(use_cookies=False)
    with signals.session_saved.connected_to(lambda s, **kw: saved.append(kw), app):
        for _ in range(1000):  # 2,000 requests
            for cookie in (session_cookie, f"{session_cookie}; {other_cid}"):
                assert raw.get("/me", headers={"Cookie": cookie}).json["user"] == "alice"
    assert saved == [] and row_count(store) == rows
    # The browser's own socket still enters its session.
    with app.app_context():
        sid = browser.get("/me").json["sid"]
        assert app.extensions["session_bridge"].get_client_id(sid) is not None
    assert browser.get("/me").json["user"] == "alice"


def test_clear_then_flash_ends_the_old_session_everywhere(app, socketio, client, bridge):
    @app.post("/logout-flash")
    def logout_flash():
        session.clear()
        flash("bye")
        return "bye"

    old = client.post("/login/alice").json["sid"]
    sc = socketio.test_client(app, flask_test_client=client)
    sc.get_received()
    ended = []
    with signals.session_ended.connected_to(lambda s, **kw: ended.append(kw["reason"]), app):
        client.post("/logout-flash")
    assert ended == ["logout"] and events(sc) == [{"reason": "logout"}]
    assert sc.emit("whoami", callback=True)["user"] is None
    new = client.get("/me").json["sid"]
    assert new is not None and new != old
    with app.app_context():
        assert bridge.get_by_id(old) is None
        assert bridge.get_by_id(new) == {"_flashes": [("message", "bye")]}


def test_bridge_methods_on_the_held_session_do_not_wait_for_its_lock(app, socketio, client, bridge):
    state = bridge._states[app]
    state.options = dataclasses.replace(state.options, lock_timeout=0.5)

    @app.post("/destroy-mine")
    def destroy_mine():
        session["seen"] = True
        return {"destroyed": bridge.destroy_by_id(session.sid)}

    @socketio.on("rename")
    def rename(name):
        session["n"] = 5
        return bridge.set_by_id(session.sid, {"user": name})

    @socketio.on("progress")
    def progress():
        with bridge.session_scope(session.sid) as held:
            held["progress"] = 100
        return bridge.get_by_id(session.sid)

    sid = client.post("/login/alice").json["sid"]
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("rename", "carol", callback=True) is True
    assert client.get("/me").json == {"user": "carol", "n": None, "items": None, "sid": sid}
    assert sc.emit("progress", callback=True) == {"user": "carol", "progress": 100}
    sc.get_received()
    response = client.post("/destroy-mine")
    assert response.status_code == 200 and response.json == {"destroyed": True}
    assert events(sc) == [{"reason": "destroyed"}]
    assert client.get("/me").json["sid"] is None
    with app.app_context():
        assert bridge.get_by_id(sid) is None


def test_socket_token_with_a_connect_handler_taking_no_argument(app, socketio, client, bridge):
    seen = []

    @app.get("/token")
    def token():
        return {"token": bridge.socket_token()}

    @socketio.on("connect")
    def on_connect():  # no auth parameter: Flask-SocketIO calls it twice
        seen.append(session.get("user"))

    client.post("/login/alice")
    sc = socketio.test_client(app, auth={"session_token": client.get("/token").json["token"]})
    assert sc.is_connected() and seen == ["alice"]
    assert sc.emit("whoami", callback=True)["user"] == "alice"
    assert sc.emit("inc", callback=True) == 1


def test_store_down_at_connect_refuses_even_with_an_error_handler(
    app, socketio, client, store, monkeypatch
):
    socketio.on_error_default(lambda e: {"error": "handled"})
    client.post("/login/alice")

    def down(*args, **kwargs):
        raise StoreUnavailable("the store is down")

    monkeypatch.setattr(store, "lock", down)
    sc = socketio.test_client(app, flask_test_client=client)
    assert not sc.is_connected()


def test_bridge_registered_before_socketio_without_the_socketio_argument(store):
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test secret", TESTING=True)
    socketio = SocketIO(async_mode="threading")
    SessionBridge(app, store=store, lock_timeout=0.5)  # before socketio.init_app
    socketio.init_app(app)

    @app.post("/inc")
    def inc():
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    @socketio.on("inc")
    def socket_inc():
        session["n"] = session.get("n", 0) + 1
        return session["n"]

    @socketio.on("read")
    def read():
        return {"n": session.get("n")}

    anonymous = socketio.test_client(app)  # a socket before any request
    assert anonymous.emit("read", callback=True) == {"n": None}  # this event wires it
    assert anonymous.emit("inc", callback=True)["error"] == "SessionMissing"
    client = app.test_client()
    assert client.post("/inc").json == {"n": 1}
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("inc", callback=True) == 2
    response = client.post("/inc")
    assert response.status_code == 200 and response.json == {"n": 3}


@pytest.mark.parametrize("reader", ["http", "socket"])
@pytest.mark.parametrize("payload", ['{" t": 5}', '{"x": {" u": 5}}', "{not json", "[1]"])
def test_corrupt_record_ends_the_session_as_invalid(app, socketio, client, store, payload, reader):
    sid = client.post("/login/alice").json["sid"]
    sc = socketio.test_client(app, flask_test_client=client)
    sc.get_received()
    token, record = store.lock(sid, 5, 5)
    store.save(sid, Record(record.client_id, payload), 60, token, True)
    ended = []
    with signals.session_ended.connected_to(lambda s, **kw: ended.append(kw["reason"]), app):
        if reader == "http":
            response = client.get("/me")
            assert response.status_code == 200 and response.json["sid"] is None
        else:
            assert sc.emit("whoami", callback=True)["sid"] is None
    assert ended == ["invalid"] and events(sc) == [{"reason": "invalid"}]
    assert store.get(sid) is None
    assert client.post("/inc").json["n"] == 1  # not jammed: served at once


def test_undecodable_bytes_in_redis_end_the_session_as_invalid(redis_server):
    store = RedisStore(redis_server.url, prefix="bytes:")
    app, socketio, bridge = create_app(store, lock_timeout=0.5)
    client = app.test_client()
    sid = client.post("/login/alice").json["sid"]
    key = store._keys(sid)[1]  # the session's record
    raw = store.client.get(key)
    store.client.set(key, raw.split(b"\n")[0] + b'\n{"user": "\xff\xfe"}', px=60_000)
    response = client.get("/me")
    assert response.status_code == 200 and response.json["sid"] is None
    assert client.post("/inc").json["n"] == 1


def cyclic():
    value = []
    value.append(value)
    return value


def deep():
    value = []
    for _ in range(400):
        value = [value]
    return value


@pytest.mark.parametrize("make", [cyclic, deep])
def test_cyclic_or_deep_values_are_session_value_errors_naming_the_key(
    app, socketio, client, make
):
    @app.post("/bad")
    def bad():
        try:
            session["bad"] = make()
        except SessionValueError as e:
            return str(e), 400
        return "stored?"

    @socketio.on("bad")
    def socket_bad():
        session["n"] = 1
        session["bad"] = make()

    @socketio.on("bad-nested")
    def socket_bad_nested():
        session["box"] = []
        session["box"].append(make())

    client.post("/login/alice")
    response = client.post("/bad")
    assert response.status_code == 400 and "'bad'" in response.text
    sc = socketio.test_client(app, flask_test_client=client)
    for event, key in (("bad", "'bad'"), ("bad-nested", "'box'")):
        ack = sc.emit(event, callback=True)
        assert ack["error"] == "SessionValueError" and key in ack["message"]
    me = client.get("/me").json
    assert (me["user"], me["n"]) == ("alice", None)
    assert client.post("/inc").json["n"] == 1


def test_logout_during_a_running_handler_is_not_undone(app, socketio, client, bridge, store):
    started, release = threading.Event(), threading.Event()

    @socketio.on("slow")
    def slow():
        session["n"] = 100
        started.set()
        release.wait(10)
        return "done"

    sid = client.post("/login/alice").json["sid"]
    sc = socketio.test_client(app, flask_test_client=client)
    acks = []
    worker = threading.Thread(target=lambda: acks.append(sc.emit("slow", callback=True)))
    worker.start()
    assert started.wait(10)
    logout = threading.Thread(target=lambda: client.post("/logout"))
    logout.start()
    release.set()
    worker.join(10)
    logout.join(10)
    assert acks == ["done"]
    # Checked in the store, not through the browser whose cookie is gone.
    assert store.get(sid) is None
    with app.app_context():
        assert bridge.get_by_id(sid) is None
    assert sc.emit("whoami", callback=True)["sid"] is None


def capture_sessions(app, monkeypatch):
    opened = []
    interface = app.session_interface
    real = interface.open_session

    def open_session(app, request):
        opened.append(real(app, request))
        return opened[-1]

    monkeypatch.setattr(interface, "open_session", open_session)
    return opened


def test_flask_parity_accessed_only_when_touched(app, client, monkeypatch):
    opened = capture_sessions(app, monkeypatch)
    client.post("/login/alice")
    client.get("/static-ish")
    assert opened[-1].accessed is False
    client.get("/me")
    assert opened[-1].accessed is True


@pytest.mark.parametrize("refresh", [True, False])
def test_flask_parity_a_change_of_permanent_resends_the_cookie(app, client, refresh):
    app.config["SESSION_REFRESH_EACH_REQUEST"] = refresh

    @app.post("/remember/<int:on>")
    def remember(on):
        session.permanent = bool(on)
        return "ok"

    def session_cookie(response):
        found = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
        assert len(found) == 1, response.headers
        return found[0]

    client.post("/login/alice")
    assert "Expires=" in session_cookie(client.post("/remember/1"))
    assert "Expires=" not in session_cookie(client.post("/remember/0"))  # don't remember me
    assert client.get("/me").json["user"] == "alice"


def test_flask_parity_no_store_write_when_the_cookie_cannot_be_set(app, client, store):
    app.config["SESSION_COOKIE_SAMESITE"] = "bogus"
    with pytest.raises(ValueError):
        client.post("/login/alice")
    assert row_count(store) == 0


def test_auto_cleanup_survives_a_failing_run_and_restarts(app, bridge):
    runs = []
    second = threading.Event()

    def receiver(sender, count):
        runs.append(count)
        if len(runs) == 1:
            raise RuntimeError("a receiver's bug")
        second.set()

    with signals.sessions_cleaned.connected_to(receiver, app), app.app_context():
        bridge.start_auto_cleanup(interval=0.01)
        assert second.wait(10)  # it ran again after the failure
        bridge.stop_auto_cleanup()
        second.clear()
        bridge.start_auto_cleanup(interval=0.01)
        assert second.wait(10)  # and starts again after a stop
        bridge.stop_auto_cleanup()


def test_a_falsy_store_object_is_used_not_replaced():
    class EmptyLooking(MemoryStore):
        def __len__(self):
            return 0

    store = EmptyLooking()
    app, socketio, bridge = create_app(store)
    sid = app.test_client().post("/login/alice").json["sid"]
    assert store.get(sid) is not None


def test_a_handler_running_past_its_lease_keeps_the_lock(store):
    # The lease (lock_expire) frees a crashed holder's lock; a holder still
    # working renews it. Without renewal the second request would take the
    # lock mid-handler and the first one's write-back would fail (or lose
    # the second's increment).
    app, socketio, bridge = create_app(store, lock_expire=0.6, lock_timeout=20)
    entered, finish = threading.Event(), threading.Event()

    @app.post("/slow-inc")
    def slow_inc():
        n = session.get("n", 0)
        entered.set()
        finish.wait(20)
        session["n"] = n + 1
        return {"n": session["n"]}

    login = app.test_client()
    login.post("/login/alice")
    header = "; ".join(f"{n}={login.get_cookie(n).value}" for n in ("session", "session.cid"))
    answers = {}

    def post(path):
        client = app.test_client(use_cookies=False)
        answers[path] = client.post(path, headers={"Cookie": header})

    slow = threading.Thread(target=post, args=("/slow-inc",))
    slow.start()
    assert entered.wait(10)
    time.sleep(2.0)  # more than three leases: only renewal keeps the lock
    fast = threading.Thread(target=post, args=("/inc",))
    fast.start()
    time.sleep(0.3)  # the second request is waiting for the lock
    finish.set()
    slow.join(20)
    fast.join(20)
    assert answers["/slow-inc"].status_code == 200
    assert answers["/inc"].status_code == 200
    assert login.get("/me").json["n"] == 2
