"""Several processes on one store: restarts, crashes, concurrent writers."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from conftest import LiveServer

from flask_session_bridge import SessionLockTimeout


@pytest.fixture(params=["sqlite", "redis"])
def shared_store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    server = request.getfixturevalue("redis_server")
    return server.url


def test_app_restart_resumes_the_session(shared_store_url, browser_factory):
    first = LiveServer("threading", shared_store_url)
    try:
        browser = browser_factory(first)
        browser.post("/login/alice")
        assert browser.socket().call("inc", timeout=10) == 1
    finally:
        first.stop()
    second = LiveServer("threading", shared_store_url)
    try:
        browser.server = second
        assert browser.get("/me").json()["user"] == "alice"
        assert browser.socket().call("inc", timeout=10) == 2
        assert browser.get("/me").json()["n"] == 2
    finally:
        second.stop()


def test_two_processes_on_one_store_lose_no_update(shared_store_url, browser_factory):
    servers = [LiveServer("threading", shared_store_url) for _ in range(2)]
    try:
        browser = browser_factory(servers[0])
        browser.post("/login/alice")
        sockets = [browser.socket(server) for server in servers]
        errors: list[object] = []

        def http_worker(server):
            other = browser_factory(server)
            other.http.cookies.update(browser.http.cookies.get_dict())
            for _ in range(100):
                if other.post("/inc").status_code != 200:
                    errors.append(server.url)

        def socket_worker(sc):
            for _ in range(100):
                if not isinstance(sc.call("inc", timeout=30), int):
                    errors.append("socket")

        threads = [threading.Thread(target=http_worker, args=(s,)) for s in servers]
        threads += [threading.Thread(target=socket_worker, args=(sc,)) for sc in sockets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert errors == []
        assert browser.get("/me").json()["n"] == 400
    finally:
        for server in servers:
            server.stop()


HOLDER = """
import sys, time
from flask_session_bridge.stores import store_from_url
store = store_from_url(sys.argv[1], ".")
store.lock(sys.argv[2], float(sys.argv[3]), 5)
print("locked", flush=True)
time.sleep(60)
"""

#: The lease of a session lock by default (DESIGN rule 5): a crashed
#: holder's lock is free again within it.
LOCK_EXPIRE = 5.0


def test_a_killed_lock_holder_blocks_the_session_at_most_its_lease(
    shared_store_url, browser_factory
):
    server = LiveServer("threading", shared_store_url)
    try:
        browser = browser_factory(server)
        sid = browser.post("/login/alice").json()["sid"]
        with subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(HOLDER), shared_store_url, sid,
             str(LOCK_EXPIRE)],
            stdout=subprocess.PIPE, text=True,
        ) as holder:
            assert holder.stdout.readline().strip() == "locked"
            locked = time.monotonic()
            holder.send_signal(signal.SIGKILL)
            holder.wait(5)
        response = browser.post("/inc")  # waits for the dead holder's lease to end
        blocked = time.monotonic() - locked
        assert response.status_code == 200 and response.json()["n"] == 1
        # The lock held while its lease ran (it excludes), and not much
        # longer: polled every 50 ms at most, never the lock timeout (10 s).
        print(f"session blocked {blocked:.2f}s by a killed holder")
        assert LOCK_EXPIRE - 0.5 <= blocked < LOCK_EXPIRE + 0.75
    finally:
        server.stop()


WORKER = """
import sys, time
from flask_session_bridge.leases import Leases
from flask_session_bridge.stores import store_from_url
store = store_from_url(sys.argv[1], ".")
expire = float(sys.argv[3])
leases = Leases(store, expire)
token, _ = store.lock(sys.argv[2], expire, 5)
leases.hold(sys.argv[2], token)
print("locked", flush=True)
time.sleep(60)  # a handler that works for a minute
"""


def test_a_working_holder_keeps_its_lock_until_killed(shared_store_url):
    # Across processes: while its worker renews the lease, nobody takes the
    # lock, for three leases and more; once the worker is killed, the lock is
    # free within one lease.
    from flask_session_bridge.stores import store_from_url

    store = store_from_url(shared_store_url, ".")
    expire = 1.0
    session_id = uuid.uuid4().hex
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), shared_store_url, session_id,
         str(expire)],
        stdout=subprocess.PIPE, text=True,
    ) as worker:
        try:
            assert worker.stdout.readline().strip() == "locked"
            locked = time.monotonic()
            while time.monotonic() - locked < 3.5 * expire:
                with pytest.raises(SessionLockTimeout):
                    store.lock(session_id, 5.0, 0)
                time.sleep(0.1)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(5)
        killed = time.monotonic()
        token, _ = store.lock(session_id, 5.0, 5.0)
        assert time.monotonic() - killed < expire + 0.5
        store.release(session_id, token, None)
