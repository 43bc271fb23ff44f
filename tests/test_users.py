"""Sessions of a user (issue 14): who a session belongs to, the user index
of every store, listing and ending a user's sessions, the user's room, the
per-user limit, and expiry announced by cleanup.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from datetime import timedelta
from datetime import timezone

import pytest
from conftest import create_app
from flask import session

from flask_session_bridge import MemoryStore
from flask_session_bridge import Record
from flask_session_bridge import RedisStore
from flask_session_bridge import SQLiteStore

KINDS = ["memory", "sqlite", "redis", "cluster"]


class Clock:
    """Wall-clock time that a test moves."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def new_id() -> str:
    return secrets.token_hex(32)


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def clocked(kind, tmp_path, request):
    """A store of each kind and a function that lets ``seconds`` pass: a
    moved clock for memory and SQLite, real time (short TTLs) for Redis.
    """
    clock = Clock()

    def move(seconds: float) -> None:
        clock.now += seconds

    if kind == "memory":
        return MemoryStore(clock=clock), move
    if kind == "sqlite":
        return SQLiteStore(str(tmp_path / "s.db"), clock=clock), move
    prefix = f"users-{uuid.uuid4().hex[:8]}:"
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        if server.process is None:
            server.start()
        store = RedisStore(server.url, prefix=prefix)
    else:
        store = RedisStore(request.getfixturevalue("redis_cluster").client(), prefix=prefix)
    return store, time.sleep


def put(store, session_id, client_id, user=None, data="{}", max_age=60.0, agent=""):
    token, _ = store.lock(session_id, 5.0, 5.0)
    record = Record(client_id, data, user_id=user, user_agent=agent)
    return store.save(session_id, record, max_age, token, True)


def ids(found):
    return {session_id for session_id, _ in found}


def index_entries(store, user_id) -> int:
    """What the store's indexes still hold for a user (and, on Redis, in the
    expiry index)."""
    if isinstance(store, MemoryStore):
        return len(store._users.get(user_id, ()))
    if isinstance(store, SQLiteStore):
        import sqlite3
        from contextlib import closing

        with closing(sqlite3.connect(store.path)) as db:
            sql = "SELECT count(*) FROM bridge_sessions WHERE user_id = ?"
            return int(db.execute(sql, (user_id,)).fetchone()[0])
    shards = [f"{store.prefix}x:{{{n}}}" for n in range(store.expiry_shards)]
    return store.client.zcard(store._user_key(user_id)) + sum(
        store.client.zcard(key) for key in shards
    )


# -- the stores' user index ---------------------------------------------------


def test_sessions_of_reads_only_the_users_sessions(clocked):
    store, _ = clocked
    a1, a2, b1, anon = new_id(), new_id(), new_id(), new_id()
    put(store, a1, "c1", "ada")
    put(store, a2, "c2", "ada")
    put(store, b1, "c3", "bob")
    put(store, anon, "c4")
    assert ids(store.sessions_of("ada")) == {a1, a2}
    assert ids(store.sessions_of("bob")) == {b1}
    assert store.sessions_of("nobody") == []
    records = dict(store.sessions_of("ada"))
    assert records[a1].client_id == "c1" and records[a1].user_id == "ada"


def test_the_index_follows_a_change_of_owner_and_a_delete(clocked):
    store, _ = clocked
    s = new_id()
    put(store, s, "c", "ada")
    put(store, s, "c", "bob")
    assert store.sessions_of("ada") == []
    assert ids(store.sessions_of("bob")) == {s}
    token, _ = store.lock(s, 5.0, 5.0)
    assert store.delete(s, token) is not None
    assert store.sessions_of("bob") == []
    assert index_entries(store, "bob") == 0


def test_created_and_user_agent_are_kept_and_last_active_moves(clocked, kind, monkeypatch):
    store, move = clocked
    s = new_id()
    before = time.time()
    put(store, s, "c", "ada", agent="Firefox")
    move(0.2)
    put(store, s, "c", "ada", data='{"n":1}', agent="Chrome")
    ((_, record),) = store.sessions_of("ada")
    assert record.user_agent == "Firefox"  # of the request that created it
    assert abs(record.created - before) < 5
    assert record.last_active - record.created >= 0.15
    # A touch (read-only work) moves it only once it is a minute old.
    if kind in ("redis", "cluster"):
        import flask_session_bridge.stores.redis as module

        monkeypatch.setattr(module, "ACTIVE_EVERY", 0.3)
        first, later = 0.1, 0.3
    else:
        first, later = 30.0, 31.0
    move(first)
    token, _ = store.lock(s, 5.0, 5.0)
    store.release(s, token, 60.0)
    assert dict(store.sessions_of("ada"))[s].last_active == pytest.approx(record.last_active)
    move(later)
    token, _ = store.lock(s, 5.0, 5.0)
    store.release(s, token, 60.0)
    touched = dict(store.sessions_of("ada"))[s]
    assert touched.last_active - record.last_active >= first + later - 0.05
    assert touched.created == pytest.approx(record.created)


def test_cleanup_reports_expired_sessions_and_leaves_no_index(clocked):
    store, move = clocked
    short, long, gone = new_id(), new_id(), new_id()
    put(store, short, "c1", "ada", max_age=0.3)
    put(store, long, "c2", "ada", max_age=0.6)
    put(store, gone, "c3", "ada", max_age=0.3)
    token, _ = store.lock(gone, 5.0, 5.0)
    store.delete(gone, token)  # destroyed: never announced as expired
    move(0.4)
    assert store.cleanup() == [(short, "c1")]
    assert ids(store.sessions_of("ada")) == {long}
    move(0.3)
    assert store.cleanup() == [(long, "c2")]
    assert store.cleanup() == []
    assert store.sessions_of("ada") == []
    assert index_entries(store, "ada") == 0


@pytest.mark.parametrize("kind", ["redis", "cluster"])  # the others have no keyspace to scan
def test_redis_cleanup_and_sessions_of_never_scan(clocked, kind, monkeypatch):
    store, move = clocked
    for name in ("scan", "scan_iter", "keys"):
        monkeypatch.setattr(store.client, name, lambda *a, **k: pytest.fail("scanned"))
    s = new_id()
    put(store, s, "c", "ada", max_age=0.2)
    assert ids(store.sessions_of("ada")) == {s}
    move(0.3)
    assert store.cleanup() == [(s, "c")]


# -- the bridge ---------------------------------------------------------------


@pytest.fixture
def parts(clocked):
    store, move = clocked
    app, socketio, bridge = create_app(store)

    @app.get("/devices")
    def devices():
        return {
            "devices": [
                {"sid": i.session_id, "client_id": i.client_id, "user_id": i.user_id,
                 "agent": i.user_agent, "current": i.current,
                 "aware": i.last_active.tzinfo is timezone.utc, "repr": repr(i)}
                for i in bridge.sessions_of(session.get("user", "ada"))
            ]
        }

    @app.post("/end-others")
    def end_others():
        return {"ended": bridge.destroy_by_user("ada", keep=session.sid)}

    return app, socketio, bridge, move


def device(app, agent="Browser"):
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = agent
    return client


def events(sc, name="session_ended"):
    return [e["args"][0] for e in sc.get_received() if e["name"] == name]


def test_sessions_of_lists_the_users_devices_without_tokens(parts):
    app, socketio, bridge, _ = parts
    phone, laptop, other = device(app, "Phone"), device(app, "Laptop"), device(app)
    phone_sid = phone.post("/identify/ada").json["sid"]
    laptop_sid = laptop.post("/identify/ada").json["sid"]
    other.post("/identify/bob")
    listed = phone.get("/devices").json["devices"]
    assert {d["sid"] for d in listed} == {phone_sid, laptop_sid}
    by_sid = {d["sid"]: d for d in listed}
    assert by_sid[phone_sid]["current"] and not by_sid[laptop_sid]["current"]
    assert by_sid[laptop_sid]["agent"] == "Laptop"
    assert by_sid[laptop_sid]["client_id"] == laptop.get("/ids").json["client_id"]
    assert all(d["aware"] and d["user_id"] == "ada" for d in listed)
    cookies = [c.value for c in (phone.get_cookie("session"), laptop.get_cookie("session"))]
    assert not any(token in str(listed) for token in cookies)


def test_destroy_by_user_ends_the_others_and_their_sockets_hear_it(parts):
    app, socketio, bridge, _ = parts
    mine, a, b = device(app), device(app), device(app)
    for client in (mine, a, b):
        client.post("/identify/ada")
    sockets = [socketio.test_client(app, flask_test_client=c) for c in (a, b)]
    for sc in sockets:
        sc.get_received()
    assert mine.post("/end-others").json == {"ended": 2}
    assert [events(sc) for sc in sockets] == [[{"reason": "destroyed"}]] * 2
    assert [d["current"] for d in mine.get("/devices").json["devices"]] == [True]
    with app.app_context():
        assert bridge.destroy_by_user("ada") == 1
        assert bridge.sessions_of("ada") == []


def test_the_user_room_reaches_each_live_session_of_the_user_only(parts):
    app, socketio, bridge, _ = parts
    a, b, bob = device(app), device(app), device(app)
    a.post("/identify/ada")
    b_sid = b.post("/identify/ada").json["sid"]
    bob.post("/identify/bob")
    sa, sb, sbob = (socketio.test_client(app, flask_test_client=c) for c in (a, b, bob))
    a.post("/emit-user/ada")
    assert [events(sc, "note") for sc in (sa, sb, sbob)] == [[{"to": "ada"}], [{"to": "ada"}], []]
    with app.app_context():
        assert bridge.destroy_by_id(b_sid)
    a.post("/emit-user/ada")
    # The ended session's socket left the room with its session.
    assert [events(sc, "note") for sc in (sa, sb)] == [[{"to": "ada"}], []]


def test_a_login_beyond_the_limit_supersedes_the_least_recently_active(clocked):
    store, move = clocked
    app, socketio, bridge = create_app(store, max_sessions_per_user=2)
    first, second, third = device(app), device(app), device(app)
    first_sid = first.post("/identify/ada").json["sid"]
    move(0.05)
    second_sid = second.post("/identify/ada").json["sid"]
    move(0.05)
    first.post("/inc")  # the first is now the more recently active
    sc = socketio.test_client(app, flask_test_client=second)
    sc.get_received()
    move(0.05)
    third_sid = third.post("/identify/ada").json["sid"]
    assert events(sc) == [{"reason": "superseded"}]
    with app.app_context():
        assert {i.session_id for i in bridge.sessions_of("ada")} == {first_sid, third_sid}
        assert bridge.get_by_id(second_sid) is None


def test_flask_login_owns_the_session_and_logout_ends_it(clocked):
    from flask_login import login_user
    from flask_login import LoginManager
    from flask_login import logout_user
    from flask_login import UserMixin

    class User(UserMixin):
        def __init__(self, name):
            self.id = name

    store, _ = clocked
    app, socketio, bridge = create_app(store)
    LoginManager(app).user_loader(User)

    @app.post("/in/<name>")
    def log_in(name):
        session["cart"] = ["book"]
        login_user(User(name))
        return {"sid": session.sid}

    @app.post("/out")
    def log_out():
        logout_user()
        return "bye"

    client = device(app)
    client.get("/me")
    sid = client.post("/in/ada").json["sid"]
    with app.app_context():
        assert [i.session_id for i in bridge.sessions_of("ada")] == [sid]
    sc = socketio.test_client(app, flask_test_client=client)
    sc.get_received()
    client.post("/out")
    assert events(sc) == [{"reason": "logout"}]
    with app.app_context():
        assert bridge.sessions_of("ada") == []
        assert bridge.get_by_id(sid) is None


def test_identify_works_in_requests_only(parts):
    app, socketio, bridge, _ = parts
    with app.app_context(), pytest.raises(RuntimeError):
        bridge.identify("ada")


def test_cleanup_announces_expiry_to_sockets_on_every_store(clocked):
    store, move = clocked
    app, socketio, bridge = create_app(store)
    app.permanent_session_lifetime = timedelta(seconds=1)
    client = device(app)
    client.post("/identify/ada")
    sc = socketio.test_client(app, flask_test_client=client)
    sc.get_received()
    move(1.3)
    with app.app_context():
        assert bridge.cleanup() == 1
    # Pushed by the cleanup: the socket has sent nothing since.
    assert events(sc) == [{"reason": "expired"}]
    client.post("/emit-user/ada")
    assert events(sc, "note") == []
    assert index_entries(store, "ada") == 0


# -- two workers on Redis -------------------------------------------------------


def test_destroy_by_user_on_one_worker_reaches_sockets_on_the_other(workers, browser_factory):
    a, b = workers
    user = f"ada-{uuid.uuid4().hex[:6]}"
    phone, laptop = browser_factory(a), browser_factory(a)
    phone.post(f"/identify/{user}")
    laptop.post(f"/identify/{user}")
    sockets = [phone.socket(b), laptop.socket(b)]
    notes: list[threading.Event] = []
    for sc in sockets:
        heard = threading.Event()
        sc.on("note", lambda data, heard=heard: heard.set())
        notes.append(heard)
    # The user room reaches both, on the other worker, through the queue.
    browser_factory(a).post(f"/emit-user/{user}")
    assert all(n.wait(5) for n in notes), "user room did not reach the other worker"
    started = time.monotonic()
    assert browser_factory(a).post(f"/destroy-user/{user}").json() == {"ended": 2}
    assert all(sc.ended_event.wait(1) for sc in sockets), "not heard within a second"
    elapsed = time.monotonic() - started
    print(f"destroy_by_user heard on the other worker after {elapsed * 1000:.0f} ms")
    assert [sc.ended for sc in sockets] == [[{"reason": "destroyed"}]] * 2
    # They left the user room on their worker too.
    for n in notes:
        n.clear()
    browser_factory(a).post(f"/emit-user/{user}")
    time.sleep(0.5)
    assert not any(n.is_set() for n in notes)
