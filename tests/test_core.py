"""One session for views and socket handlers, in-process (Flask test client
and Flask-SocketIO's test client), on every store.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from flask import session
from flask_socketio import Namespace

from flask_session_bridge import SessionBridgeError
from flask_session_bridge import SessionMissing
from flask_session_bridge import signals
from flask_session_bridge.stores.base import Record


def events(sc, name="session_ended"):
    return [e["args"][0] for e in sc.get_received() if e["name"] == name]


def test_http_write_is_seen_by_socket(client, socket_client):
    client.post("/login/alice")
    sc = socket_client()
    assert sc.emit("whoami", callback=True)["user"] == "alice"


def test_socket_write_is_seen_by_next_request(client, socket_client):
    client.post("/login/alice")
    sc = socket_client()
    assert sc.emit("inc", callback=True) == 1
    assert sc.emit("inc", callback=True) == 2
    assert client.get("/me").json["n"] == 2
    client.post("/inc")
    assert sc.emit("whoami", callback=True)["n"] == 3


def test_nested_mutation_in_socket_handler_persists(client, socket_client):
    client.post("/login/alice")
    sc = socket_client()
    sc.emit("append", "a", callback=True)
    assert sc.emit("append", "b", callback=True) == ["a", "b"]
    assert client.get("/me").json["items"] == ["a", "b"]


def test_socket_stays_in_the_session_it_presented_across_login_and_logout(client, socket_client):
    client.get("/me")  # the browser gets its client cookie, no session yet
    anonymous = socket_client()
    assert anonymous.emit("whoami", callback=True) == {"user": None, "n": None, "sid": None}
    client.post("/inc")  # a pre-login session (a cart, say)
    before = socket_client()
    assert before.emit("whoami", callback=True)["n"] == 1
    anonymous.get_received(), before.get_received()

    sid = client.post("/login/alice").json["sid"]
    # Neither socket presented the logged-in session: neither enters it.
    assert anonymous.emit("whoami", callback=True) == {"user": None, "n": None, "sid": None}
    assert events(anonymous) == []
    assert events(before) == [{"reason": "renewed"}]
    assert before.emit("whoami", callback=True) == {"user": None, "n": None, "sid": None}
    # What the page does on session_ended: reconnect with the new cookies.
    after = socket_client()
    assert after.emit("whoami", callback=True) == {"user": "alice", "n": 1, "sid": sid}

    client.post("/logout")
    assert events(after) == [{"reason": "logout"}]
    assert after.emit("whoami", callback=True)["user"] is None
    client.post("/login/bob")
    assert after.emit("whoami", callback=True)["user"] is None  # never follows
    assert socket_client().emit("whoami", callback=True)["user"] == "bob"


def test_cookieless_socket_creates_no_session(app, socketio):
    saved = []
    with signals.session_saved.connected_to(lambda s, **kw: saved.append(kw), app):
        sc = socketio.test_client(app)
        ack = sc.emit("inc", callback=True)
        assert ack["error"] == "SessionMissing"
        assert sc.emit("whoami", callback=True)["sid"] is None
        sc.disconnect()
    assert saved == []


def test_socket_write_without_session_raises_session_missing(client, socket_client):
    client.get("/me")
    sc = socket_client()
    assert sc.emit("set", "k", "v", callback=True)["error"] == "SessionMissing"
    assert client.get("/me").json["sid"] is None


def test_client_cookie_issued_on_read_and_survives_logout(app, client):
    response = client.get("/me")
    cookies = response.headers.getlist("Set-Cookie")
    assert any(c.startswith("session.cid=") and "HttpOnly" in c for c in cookies)
    assert not any(c.startswith("session=") for c in cookies)
    cid = client.get_cookie("session.cid").value
    client.post("/login/alice")
    client.post("/logout")
    assert client.get_cookie("session.cid").value == cid
    assert client.get_cookie("session") is None


def test_vary_cookie_only_when_session_read(client):
    assert "Cookie" in client.get("/me").headers.get("Vary", "")
    assert "Cookie" not in client.get("/static-ish").headers.get("Vary", "")


def test_session_and_client_ids_are_public_not_the_token(app, client, bridge):
    sid = client.post("/login/alice").json["sid"]
    token = client.get_cookie("session").value
    assert sid not in token and token.split(".")[0] != sid
    with app.app_context():
        client_id = bridge.get_client_id(sid)
        assert bridge.get_session_id(client_id) == sid
        assert client_id not in client.get_cookie("session.cid").value


def test_regenerate_moves_data_and_tells_old_sockets_renewed(app, client, socket_client, bridge):
    old = client.post("/login/alice").json["sid"]
    sc = socket_client()
    sc.emit("inc", callback=True)
    sc.get_received()
    new = client.post("/login/alice").json["sid"]  # login regenerates
    assert new != old
    with app.app_context():
        assert bridge.get_by_id(old) is None
        assert bridge.get_by_id(new)["n"] == 1
    assert events(sc) == [{"reason": "renewed"}]
    assert sc.emit("whoami", callback=True) == {"user": None, "n": None, "sid": None}
    assert sc.emit("inc", callback=True)["error"] == "SessionMissing"
    reply = socket_client().emit("whoami", callback=True)
    assert reply["sid"] == new and reply["n"] == 1


def test_socket_with_stale_cookie_after_regenerate_gets_no_session(app, socketio, client):
    client.post("/login/alice")
    stale = client.get_cookie("session").value
    client.post("/login/alice")
    other = app.test_client()
    other.set_cookie("session", stale)
    other.set_cookie("session.cid", client.get_cookie("session.cid").value)
    sc = socketio.test_client(app, flask_test_client=other)
    assert sc.emit("whoami", callback=True)["user"] is None
    assert sc.emit("whoami", callback=True)["user"] is None
    assert other.get("/me").json["user"] is None
    sc.disconnect()


def test_lost_session_cookie_does_not_reopen_session(app, socketio, client):
    client.post("/login/alice")
    client.delete_cookie("session")  # browser closed: session cookie gone
    assert client.get("/me").json["user"] is None
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("whoami", callback=True)["user"] is None
    assert sc.emit("whoami", callback=True)["user"] is None
    sc.disconnect()


def test_socket_clear_ends_session_for_all_sockets(client, socket_client):
    client.post("/login/alice")
    a, b = socket_client(), socket_client()
    a.get_received(), b.get_received()

    assert a.emit("whoami", callback=True)["user"] == "alice"
    b.emit("set", "x", 1, callback=True)
    client.post("/logout")
    assert events(a) == [{"reason": "logout"}]
    assert events(b) == [{"reason": "logout"}]
    assert b.emit("whoami", callback=True)["user"] is None


def test_handler_that_raises_writes_nothing(app, socketio, client, socket_client):
    @socketio.on("boom")
    def boom():
        session["n"] = 100
        raise RuntimeError("handler failed")

    socketio.on_error_default(lambda e: {"error": str(e)})
    client.post("/login/alice")
    sc = socket_client()
    assert sc.emit("boom", callback=True) == {"error": "handler failed"}
    assert client.get("/me").json["n"] is None


def test_error_response_writes_nothing(app, client):
    @app.post("/fail")
    def fail():
        session["n"] = 100
        return "nope", 500

    client.post("/login/alice")
    client.post("/fail")
    assert client.get("/me").json["n"] is None


def test_unserializable_value_names_key_and_keeps_stored_data(app, client):
    @app.post("/bad")
    def bad():
        session["n"] = 5
        try:
            session["thing"] = object()
        except TypeError as e:
            return str(e), 400
        return "stored?"

    client.post("/login/alice")
    response = client.post("/bad")
    assert response.status_code == 400 and "'thing'" in response.text
    assert client.get("/me").json["n"] == 5  # the valid write went through


def test_untouched_request_does_no_store_io(app, client, request):
    client.post("/login/alice")
    calls = request.getfixturevalue("store_calls")
    response = client.get("/static-ish")
    assert response.status_code == 200 and calls == []
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    "value",
    ["garbage", "", "a.b", "x" * 5000, "tampered.signature", "%C3%A9%3B", "%00abc"],
    ids=["garbage", "empty", "dotted", "oversized", "unsigned", "non-ascii", "nul"],
)
def test_bad_session_cookies_mean_no_session_and_no_store_read(raw_client, store_calls, value):
    response = raw_client.get("/me", headers={"Cookie": f"session={value}"})
    assert response.status_code == 200
    assert response.json["sid"] is None
    assert store_calls == []


def test_tampered_valid_looking_cookie_is_refused(app, client, store, monkeypatch):
    client.post("/login/alice")
    token, signature = client.get_cookie("session").value.split(".")
    forged = token[:-1] + ("A" if token[-1] != "A" else "B") + "." + signature
    client.set_cookie("session", forged)
    assert client.get("/me").json["user"] is None


def test_concurrent_http_and_socket_increments_lose_nothing(app, socketio, client):
    # 8 HTTP threads x 500 and 4 sockets x 500 on one session.
    http_threads, socket_threads, each = 8, 4, 500
    client.post("/login/alice")
    errors = []

    def http_worker():
        http = app.test_client()
        for cookie in ("session", "session.cid"):
            http.set_cookie(cookie, client.get_cookie(cookie).value)
        for _ in range(each):
            response = http.post("/inc")
            if response.status_code != 200:
                errors.append(response.status_code)

    def socket_worker():
        sc = socketio.test_client(app, flask_test_client=client)
        for _ in range(each):
            reply = sc.emit("inc", callback=True)
            if not isinstance(reply, int):
                errors.append(reply)
        sc.disconnect()

    threads = [threading.Thread(target=http_worker) for _ in range(http_threads)]
    threads += [threading.Thread(target=socket_worker) for _ in range(socket_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    assert errors == []
    assert client.get("/me").json["n"] == (http_threads + socket_threads) * each


def test_session_scope_increments_from_threads_lose_nothing(app, client, bridge):
    # 4 threads x 500 read-modify-writes with no HTTP or socket overhead, so
    # the window between load and write-back is what the lock must cover.
    sid = client.post("/login/alice").json["sid"]
    threads, each = 4, 500
    acked, errors = [], []

    def worker():
        with app.app_context():
            for _ in range(each):
                try:
                    with bridge.session_scope(sid) as s:
                        s["n"] = s.get("n", 0) + 1
                except SessionBridgeError as e:
                    errors.append(e)
                else:
                    acked.append(1)

    running = [threading.Thread(target=worker) for _ in range(threads)]
    for th in running:
        th.start()
    for th in running:
        th.join(300)
    assert errors == [] and len(acked) == threads * each
    assert client.get("/me").json["n"] == len(acked)


def test_lock_timeout_is_a_clear_503(app, client, bridge):
    sid = client.post("/login/alice").json["sid"]
    state = bridge._states[app]
    state.options = dataclasses.replace(state.options, lock_timeout=0.2)
    with app.app_context(), bridge.session_scope(sid):
        response = client.get("/me")
    assert response.status_code == 503
    assert client.get("/me").json["user"] == "alice"


def test_memory_lock_table_does_not_grow():
    from conftest import create_app

    from flask_session_bridge import MemoryStore

    store = MemoryStore()
    app, socketio, _ = create_app(store)
    client = app.test_client()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    for _ in range(50):
        client.post("/inc")
        sc.emit("inc", callback=True)
    assert store._locks == {}


def test_bridge_api(app, client, socket_client, socketio, bridge):
    sid = client.post("/login/alice").json["sid"]
    sc = socket_client()
    other = app.test_client()
    other.post("/login/bob")
    bystander = socketio.test_client(app, flask_test_client=other)
    sc.get_received()
    socketio.emit("hello", "alice's tabs", to=bridge.room(sid))
    assert events(sc, "hello") == ["alice's tabs"]
    assert events(bystander, "hello") == []
    with app.app_context():
        client_id = bridge.get_client_id(sid)
        assert bridge.get_session_id(client_id) == sid
        assert bridge.get_by_client_id(client_id) == {"user": "alice"}
        assert bridge.set_by_id(sid, {"user": "carol"}) is True
        assert bridge.set_by_id("0" * 64, {"user": "x"}) is False
        assert bridge.get_by_id("0" * 64) is None
        with bridge.session_scope(sid) as s:
            s["n"] = 41
            s["n"] += 1
    assert client.get("/me").json == {"user": "carol", "n": 42, "items": None, "sid": sid}
    assert sc.emit("whoami", callback=True)["n"] == 42
    with app.app_context():
        assert bridge.destroy_by_client_id(client_id) is True
        assert bridge.destroy_by_id(sid) is False
    assert events(sc) == [{"reason": "destroyed"}]
    assert client.get("/me").json["user"] is None


def test_signals(app, client):
    saved, ended = [], []
    with signals.session_saved.connected_to(lambda s, **kw: saved.append(kw), app), \
            signals.session_ended.connected_to(lambda s, **kw: ended.append(kw), app):
        client.get("/me")
        sid = client.post("/login/alice").json["sid"]
        client.post("/inc")
        client.get("/me")
        client.post("/logout")
    assert [s["is_new"] for s in saved] == [True, False]
    assert all(s["session_id"] == sid for s in saved)
    assert [(e["session_id"], e["reason"]) for e in ended] == [(sid, "logout")]


def test_validator_ends_session(app, client, socket_client, bridge):
    banned = set()
    ended = []

    @bridge.validator
    def user_exists(s):
        return s.get("user") not in banned

    client.post("/login/alice")
    sc = socket_client()
    assert sc.emit("whoami", callback=True)["user"] == "alice"
    banned.add("alice")
    with signals.session_ended.connected_to(lambda s, **kw: ended.append(kw["reason"]), app):
        assert client.get("/me").json["user"] is None
    assert ended == ["invalid"]
    assert client.get_cookie("session") is None
    assert sc.emit("whoami", callback=True)["user"] is None


def test_validator_runs_at_socket_connect(app, socketio, client, bridge):
    client.post("/login/alice")
    bridge.validator(lambda s: False)
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("whoami", callback=True)["user"] is None
    sc.disconnect()


def test_cli_cleanup_removes_exactly_expired(app, bridge, store):
    with app.app_context():
        for i in range(3):
            token, _ = store.lock(f"{i:064x}", 5, 5)
            store.save(f"{i:064x}", Record("c" * 64, f'{{"i":{i}}}'), 0.2 if i else 60, token, True)
    import time

    time.sleep(0.4)
    result = app.test_cli_runner().invoke(args=["bridge-cleanup"])
    assert result.exit_code == 0
    # Redis expires keys itself; its expiry index reports them.
    assert "Removed 2 expired sessions." in result.output
    with app.app_context():
        assert bridge.get_by_id(f"{0:064x}") == {"i": 0}
        assert bridge.get_by_id(f"{1:064x}") is None


class Clock:
    """A clock for a store, that a test moves forward."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.mark.parametrize("kind", ["memory", "sqlite"])  # Redis expires keys itself
def test_cleanup_announces_expiry_to_sockets_at_once(kind, tmp_path):
    from conftest import create_app

    from flask_session_bridge import MemoryStore
    from flask_session_bridge import SQLiteStore

    clock = Clock(time.time())
    if kind == "memory":
        store = MemoryStore(clock=clock)
    else:
        store = SQLiteStore(str(tmp_path / "s.db"), clock=clock)
    app, socketio, bridge = create_app(store)
    client = app.test_client()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    sc.get_received()
    clock.now += app.permanent_session_lifetime.total_seconds() + 1
    with app.app_context():
        assert bridge.cleanup() == 1
    # Heard before the socket sends anything.
    assert events(sc) == [{"reason": "expired"}]
    assert sc.emit("whoami", callback=True)["user"] is None


def test_permanent_session_cookie_has_expiry(app, client):
    @app.post("/remember")
    def remember():
        session.permanent = True
        session["user"] = "alice"
        return "ok"

    cookie = client.post("/remember").headers.getlist("Set-Cookie")
    assert any(c.startswith("session=") and "Expires=" in c for c in cookie)


class ChatNamespace(Namespace):
    def on_connect(self, auth=None):
        self.connected_user = session.get("user")

    def on_whoami(self):
        return session.get("user")


def test_class_based_namespace_connect_still_runs(app, socketio, client):
    chat = ChatNamespace("/chat")
    socketio.on_namespace(chat)
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client, namespace="/chat")
    assert chat.connected_user == "alice"
    assert sc.emit("whoami", callback=True, namespace="/chat") == "alice"
    sc.disconnect(namespace="/chat")


def test_reject_refuses_and_disconnects(client):
    from conftest import create_app

    app, socketio, _bridge = create_app(socket_missing="reject")
    client = app.test_client()
    refused = socketio.test_client(app, flask_test_client=client)
    assert not refused.is_connected()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.is_connected()
    client.post("/logout")
    assert not sc.is_connected()


def test_connect_check_in_namespace_without_connect_handler(client):
    from conftest import create_app

    app, socketio, _bridge = create_app(socket_missing="reject")

    @socketio.on("ping", namespace="/other")
    def ping():
        return session.get("user")

    client = app.test_client()
    refused = socketio.test_client(app, flask_test_client=client, namespace="/other")
    assert not refused.is_connected()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client, namespace="/other")
    assert sc.emit("ping", callback=True, namespace="/other") == "alice"


def test_handlers_registered_after_bridge_get_the_session(client, socket_client, socketio):
    @socketio.on("late")
    def late():
        session["late"] = True
        return session.get("user")

    client.post("/login/alice")
    assert socket_client().emit("late", callback=True) == "alice"


def test_init_app_errors(tmp_path):
    from flask import Flask

    from flask_session_bridge import SessionBridge

    app = Flask(__name__)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        SessionBridge(app)
    app.config["SECRET_KEY"] = "k"
    SessionBridge(app)
    with pytest.raises(RuntimeError, match="already registered"):
        SessionBridge(app)
    other = Flask(__name__)
    other.config.update(SECRET_KEY="k", SESSION_BRIDGE_STORE="mongodb://x")
    with pytest.raises(RuntimeError, match="memory://"):
        SessionBridge(other)


def test_keyword_option_wins_over_config():
    from flask import Flask

    from flask_session_bridge import SessionBridge

    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", SESSION_BRIDGE_LOCK_TIMEOUT=3)
    bridge = SessionBridge(app, lock_timeout=7)
    assert bridge._states[app].options.lock_timeout == 7
    app2 = Flask(__name__)
    app2.config.update(SECRET_KEY="k", SESSION_BRIDGE_LOCK_TIMEOUT=3)
    bridge.init_app(app2)
    assert bridge._states[app2].options.lock_timeout == 7
    app3 = Flask(__name__)
    app3.config.update(SECRET_KEY="k", SESSION_BRIDGE_LOCK_TIMEOUT=3)
    SessionBridge().init_app(app3)
    assert app3.extensions["session_bridge"]._states[app3].options.lock_timeout == 3


def test_ids_available_in_views_and_handlers_without_reading_data(app, socketio, client, bridge):
    sid = client.post("/login/alice").json["sid"]
    over_http = client.get("/ids").json
    sc = socketio.test_client(app, flask_test_client=client)
    over_socket = sc.emit("ids", callback=True)
    sc.disconnect()
    assert over_http == over_socket
    assert over_http["sid"] == sid
    with app.app_context():
        assert bridge.get_session_id(over_http["client_id"]) == sid


@pytest.mark.parametrize("bad_id", ["", "abc", "../x", "a/b", "' OR 1=1--", "x" * 10_000, "é" * 64])
def test_bridge_api_refuses_impossible_ids_before_any_io(app, bridge, store_calls, bad_id):
    with app.app_context():
        assert bridge.get_by_id(bad_id) is None
        assert bridge.get_client_id(bad_id) is None
        assert bridge.get_session_id(bad_id) is None
        assert bridge.set_by_id(bad_id, {"x": 1}) is False
        assert bridge.destroy_by_id(bad_id) is False
        with pytest.raises(SessionMissing, match="no such session"), bridge.session_scope(bad_id):
            pass
    assert store_calls == []
