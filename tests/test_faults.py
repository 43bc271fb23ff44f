"""A store that goes down, and comes back: clear answers, nothing lost."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest
from conftest import create_app
from conftest import RedisServer

from flask_session_bridge import RedisStore
from flask_session_bridge import SessionLockTimeout


@pytest.fixture
def flaky_redis(tmp_path):
    """A Redis of its own, keeping its data on disk, that tests may stop and
    start.
    """
    server = RedisServer(str(tmp_path))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def parts(flaky_redis):
    return create_app(RedisStore(flaky_redis.url))


def test_store_down_at_request_is_503_and_recovers(parts, flaky_redis, caplog):
    app, _socketio, _bridge = parts
    client = app.test_client()
    sid = client.post("/login/alice").json["sid"]
    flaky_redis.stop()
    with caplog.at_level(logging.ERROR, logger="flask_session_bridge"):
        response = client.get("/me")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "unavailable" in response.text and len(response.text) < 100
    assert any("Redis" in r.getMessage() for r in caplog.records)
    assert client.get("/static-ish").status_code == 200  # untouched views keep working
    assert client.post("/inc").status_code == 503
    flaky_redis.start()
    assert client.get("/me").json == {  # same app, no restart; nothing was written
        "user": "alice", "n": None, "items": None, "sid": sid
    }
    assert app.test_client().get("/me").json["user"] is None  # nothing leaked


def test_store_down_at_socket_connect_refuses(parts, flaky_redis):
    app, socketio, _bridge = parts
    client = app.test_client()
    client.post("/login/alice")
    flaky_redis.stop()
    sc = socketio.test_client(app, flask_test_client=client)
    assert not sc.is_connected()
    flaky_redis.start()
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.is_connected()
    assert sc.emit("whoami", callback=True)["user"] == "alice"


def test_store_down_while_saving_sets_no_cookie(parts, flaky_redis, caplog):
    app, _socketio, _bridge = parts

    @app.post("/stop-then-write")
    def stop_then_write():
        from flask import session

        session["user"] = "alice"
        flaky_redis.stop()
        return "written?"

    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="flask_session_bridge"):
        response = client.post("/stop-then-write")
    assert response.status_code == 503 and "written?" not in response.text
    assert not any(c.startswith("session=") for c in response.headers.getlist("Set-Cookie"))
    assert any("session not saved" in r.getMessage() for r in caplog.records)
    flaky_redis.start()
    assert client.get("/me").json["user"] is None


def test_redis_stopped_for_five_seconds(parts, flaky_redis):
    app, socketio, _bridge = parts
    client = app.test_client()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("inc", callback=True) == 1
    flaky_redis.stop()
    answers = set()
    down_until = time.monotonic() + 5
    while time.monotonic() < down_until:
        answers.add(client.post("/inc").status_code)
        answers.add(sc.emit("inc", callback=True)["error"])
        time.sleep(0.25)
    assert answers == {503, "StoreUnavailable"}
    flaky_redis.start()
    # The first request after succeeds, and no failed write left anything.
    assert client.post("/inc").json["n"] == 2
    assert sc.emit("inc", callback=True) == 3 and sc.is_connected()


def test_a_silently_dropping_redis_fails_within_its_timeout(flaky_redis):
    # SIGSTOP: connections stay open and nothing answers, as with a network
    # that drops packets. socket_timeout bounds every wait.
    app, socketio, _bridge = create_app(RedisStore(f"{flaky_redis.url}?socket_timeout=0.5"))
    client = app.test_client()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    os.kill(flaky_redis.process.pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        assert client.get("/me").status_code == 503
        assert sc.emit("whoami", callback=True)["error"] == "StoreUnavailable"
        assert time.monotonic() - began < 3  # two calls, 0.5 s each, no retries
    finally:
        os.kill(flaky_redis.process.pid, signal.SIGCONT)
    assert client.get("/me").json["user"] == "alice"


def test_bad_store_url_fails_at_init_app():
    from flask import Flask

    from flask_session_bridge import SessionBridge

    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", SESSION_BRIDGE_STORE="sqlite://")
    with pytest.raises(RuntimeError, match=r"sqlite:///relative/or/absolute\.db"):
        SessionBridge(app)


def test_store_urls(tmp_path, redis_server):
    from flask import Flask

    from flask_session_bridge import MemoryStore
    from flask_session_bridge import SessionBridge
    from flask_session_bridge import SQLiteStore

    kinds = {}
    for url in ("memory://", "sqlite:///s.db", redis_server.url):
        app = Flask(__name__, instance_path=str(tmp_path))
        app.config.update(SECRET_KEY="k", SESSION_BRIDGE_STORE=url)
        bridge = SessionBridge(app)
        kinds[url] = bridge._states[app].store
    assert isinstance(kinds["memory://"], MemoryStore)
    assert isinstance(kinds["sqlite:///s.db"], SQLiteStore)
    assert kinds["sqlite:///s.db"].path == str(tmp_path / "s.db")
    assert isinstance(kinds[redis_server.url], RedisStore)


def test_store_down_during_socket_write_back(flaky_redis):
    # The lock could not be released while Redis was down: it stays until
    # lock_expire, as a crashed holder's would.
    app, socketio, _bridge = create_app(RedisStore(flaky_redis.url), lock_expire=1)

    @socketio.on("inc-then-fail")
    def inc_then_fail():
        from flask import session

        session["n"] = session.get("n", 0) + 100
        flaky_redis.stop()
        return "written?"

    client = app.test_client()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    sc.emit("inc", callback=True)
    assert sc.emit("inc-then-fail", callback=True)["error"] == "StoreUnavailable"
    assert sc.is_connected()
    flaky_redis.start()
    assert sc.emit("whoami", callback=True)["n"] == 1


def test_redis_restarted_while_a_lock_is_held(parts, flaky_redis):
    # Redis goes down during the request and comes back with its data
    # (AOF), so the lock the failed write-back could not release survives.
    # The store that failed to release it frees it as soon as Redis answers;
    # any other worker waits at most the lease (5 s), not 30 s.
    app, _socketio, _bridge = create_app(RedisStore(flaky_redis.url), lock_expire=5)
    other_worker, _s, _b = create_app(RedisStore(flaky_redis.url), lock_expire=5)

    @app.post("/stop-redis")
    def stop_redis():
        from flask import session

        session["n"] = 100
        flaky_redis.stop()
        return "written?"

    client = app.test_client()
    client.post("/login/alice")
    header = "; ".join(f"{n}={client.get_cookie(n).value}" for n in ("session", "session.cid"))
    assert client.post("/stop-redis").status_code == 503
    flaky_redis.start()
    began = time.monotonic()
    response = other_worker.test_client(use_cookies=False).post(
        "/inc", headers={"Cookie": header}
    )
    waited = time.monotonic() - began
    assert response.json == {"n": 1}  # the 503'd write was not applied
    assert waited <= 5.5, f"blocked {waited:.1f}s by a lock nobody holds"

    # Again, and this time the same worker asks first: it frees the lock it
    # could not release at once.
    assert client.post("/stop-redis").status_code == 503
    flaky_redis.start()
    began = time.monotonic()
    assert client.post("/inc").json == {"n": 2}
    assert time.monotonic() - began < 1


def test_a_save_redis_receives_after_the_client_gave_up_is_not_applied(flaky_redis):
    # SIGSTOP while the save is on its way: the client gives up after its
    # socket timeout and answers 503 "not saved". When Redis resumes, the
    # save's script finds its deadline passed and writes nothing, so the
    # 503 is true and a retry does not apply the change twice.
    app, socketio, _bridge = create_app(RedisStore(f"{flaky_redis.url}?socket_timeout=0.5"))
    pid = flaky_redis.process.pid

    def inc_while_paused():  # a view and a socket handler
        from flask import session

        session["n"] = session.get("n", 0) + 1
        os.kill(pid, signal.SIGSTOP)  # the save goes out after this returns
        return "written?"

    app.post("/inc-while-paused")(inc_while_paused)
    socketio.on("inc-while-paused")(inc_while_paused)

    client = app.test_client()
    client.post("/login/alice")
    assert client.post("/inc").json == {"n": 1}
    assert client.post("/inc-while-paused").status_code == 503
    os.kill(pid, signal.SIGCONT)  # Redis runs what it had received
    assert client.get("/me").json["n"] == 1
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("inc-while-paused", callback=True)["error"] == "StoreUnavailable"
    os.kill(pid, signal.SIGCONT)
    assert sc.emit("whoami", callback=True)["n"] == 1
    assert client.post("/inc").json == {"n": 2}


def test_waiters_are_woken_not_polling(flaky_redis, monkeypatch):
    store = RedisStore(flaky_redis.url)
    tries = []
    round_trip = store._round_trip

    def counting_round_trip(steps, *args):
        tries.extend(1 for script, _keys, _args in steps if script is store._lock)
        return round_trip(steps, *args)

    monkeypatch.setattr(store, "_round_trip", counting_round_trip)
    token, _ = store.lock("busy", 5, 1)
    waited = []

    def waiter():
        began = time.monotonic()
        store.lock("busy", 5, 5)
        waited.append(time.monotonic() - began)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(1)
    store.release("busy", token, None)
    thread.join()
    # One try before waiting and one when woken (a stale wake-up may add
    # one); a poll with 1-20 ms sleeps makes 50 or more in a second.
    assert len(tries) - 1 <= 3, f"{len(tries) - 1} tries while waiting"
    assert 1 <= waited[0] < 1.2, waited


def test_a_crashed_holders_lock_is_free_within_its_lease(flaky_redis):
    crashed = RedisStore(flaky_redis.url)
    crashed.lock("orphan", 0.5, 1)  # and never released: its process died
    store = RedisStore(flaky_redis.url)
    began = time.monotonic()
    store.lock("orphan", 5, 5)
    assert 0.3 < time.monotonic() - began < 1.0


def test_a_renewed_lock_outlives_its_lease(flaky_redis):
    store = RedisStore(flaky_redis.url)
    token, _ = store.lock("long-work", 0.5, 1)
    for _ in range(4):  # 1.2 s of work, renewed every 0.3 s
        time.sleep(0.3)
        assert store.renew("long-work", token, 0.5)
    with pytest.raises(SessionLockTimeout):
        store.lock("long-work", 5, 0.2)
    assert not store.renew("long-work", "another holder", 0.5)
    time.sleep(0.6)  # no renewal: the lease runs out
    assert not store.renew("long-work", token, 0.5)
    store.lock("long-work", 5, 0.2)


def test_a_save_its_replica_did_not_confirm_says_the_outcome_is_unknown(flaky_redis):
    # With wait_replicas, a save that the replica does not confirm in time is
    # applied on the master all the same: the answer must not say "not
    # saved" (a retry would apply it twice), but that the outcome is unknown.
    import redis

    replica = RedisServer()
    replica.start()
    try:
        follower = redis.Redis.from_url(replica.url)
        follower.replicaof("127.0.0.1", flaky_redis.port)
        deadline = time.monotonic() + 10
        while follower.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.05)
        store = RedisStore(flaky_redis.url, wait_replicas=1, wait_timeout=0.3)
        app, socketio, _bridge = create_app(store)

        def silence_replica() -> None:
            os.kill(replica.process.pid, signal.SIGSTOP)

        def inc_unconfirmed():  # a view and a socket handler
            from flask import session

            session["n"] = session.get("n", 0) + 1
            silence_replica()  # the save's WAIT goes out after this returns
            return "written?"

        app.post("/inc-unconfirmed")(inc_unconfirmed)
        socketio.on("inc-unconfirmed")(inc_unconfirmed)

        client = app.test_client()
        client.post("/login/alice")
        assert client.post("/inc").json == {"n": 1}
        response = client.post("/inc-unconfirmed")
        assert response.status_code == 503
        assert b"unknown" in response.data and b"nothing was saved" not in response.data
        os.kill(replica.process.pid, signal.SIGCONT)
        assert client.get("/me").json["n"] == 2  # the master had applied it
        sc = socketio.test_client(app, flask_test_client=client)
        answer = sc.emit("inc-unconfirmed", callback=True)
        assert answer["error"] == "StoreUnavailable" and answer["outcome"] == "unknown"
        os.kill(replica.process.pid, signal.SIGCONT)
        assert sc.emit("whoami", callback=True)["n"] == 3
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
        replica.stop()

