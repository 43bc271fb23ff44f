"""RedisStore on a real master + replica watched by Sentinel
(tests/redis_servers.py), with ``wait_replicas``.
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import create_app
from redis_servers import cli
from redis_servers import wait_until

from flask_session_bridge import RedisStore
from flask_session_bridge import StoreUnavailable


def test_failover_loses_no_acknowledged_increment(redis_sentinel):
    store = RedisStore(redis_sentinel.master(socket_timeout=1), wait_replicas=1, wait_timeout=0.5)
    app, socketio, _bridge = create_app(store)
    login = app.test_client()
    sid = login.post("/login/alice").json["sid"]
    header = "; ".join(
        f"{name}={login.get_cookie(name).value}" for name in ("session", "session.cid")
    )
    # Each acknowledged increment answers the count it wrote: a lost one
    # shows as a count acknowledged twice, or above what is stored.
    acknowledged: list[int] = []
    refused = [0]
    stop = threading.Event()

    def http_worker():
        client = app.test_client(use_cookies=False)
        while not stop.is_set():
            response = client.post("/inc", headers={"Cookie": header})
            if response.status_code == 200:
                acknowledged.append(response.json["n"])
            else:
                assert response.status_code == 503
                refused[0] += 1
                time.sleep(0.05)

    def socket_worker():
        sc = None
        while not stop.is_set():
            if sc is None or not sc.is_connected():
                sc = socketio.test_client(app, flask_test_client=login)
                continue
            reply = sc.emit("inc", callback=True)
            if isinstance(reply, int):
                acknowledged.append(reply)
            else:
                assert reply["error"] in ("StoreUnavailable", "SessionLockTimeout")
                refused[0] += 1
                time.sleep(0.05)
        if sc is not None and sc.is_connected():
            sc.disconnect()

    old_master = redis_sentinel.master_port()
    threads = [threading.Thread(target=http_worker) for _ in range(2)]
    threads += [threading.Thread(target=socket_worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        before = len(acknowledged)
        redis_sentinel.failover()
        failed_over = time.monotonic()
        deadline = time.monotonic() + 50
        while redis_sentinel.master_port() == old_master and time.monotonic() < deadline:
            time.sleep(0.1)
        assert redis_sentinel.master_port() != old_master
        switched = len(acknowledged)
        switch_time = time.monotonic() - failed_over
        # Service resumes without a restart: increments go through again,
        # once Sentinel made the deposed master a replica of the new one
        # (min-replicas-to-write 1; see redis_servers.SentinelSet).
        while len(acknowledged) < switched + 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        resumed = time.monotonic() - failed_over
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert before > 20
    assert len(acknowledged) >= switched + 50, "no service after the failover"
    # Read what survived where it survives: once the deposed master follows
    # the new one (its own writes are then gone), through a new client.
    wait_until(
        lambda: "master_link_status:up" in cli(old_master, "INFO", "replication"),
        40, "the deposed master following the new one",
    )
    _app, _socketio, fresh = create_app(RedisStore(redis_sentinel.master()))
    with _app.app_context():
        stored = fresh.get_by_id(sid)["n"]
    assert len(set(acknowledged)) == len(acknowledged), "an acknowledged increment was lost"
    lost = sum(1 for n in acknowledged if n > stored)
    assert lost == 0, f"{lost} of {len(acknowledged)} acknowledged increments lost"
    print(f"acknowledged {len(acknowledged)}, stored {stored}, refused {refused[0]}, "
          f"master switched after {switch_time:.1f}s, 50 more acknowledged after {resumed:.1f}s")


def test_too_few_replicas_is_a_failure(redis_sentinel):
    # One replica exists: waiting for two can never succeed.
    store = RedisStore(redis_sentinel.master(), wait_replicas=2, wait_timeout=0.2)
    with pytest.raises(StoreUnavailable, match="1 of 2 replicas"):
        store.lock("some-session", 5, 1)


def test_wait_timeout_must_fit_in_the_socket_timeout(redis_sentinel):
    with pytest.raises(ValueError, match="socket timeout"):
        RedisStore(redis_sentinel.master(socket_timeout=1), wait_replicas=1, wait_timeout=1)
