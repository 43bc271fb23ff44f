"""The store contract, run over every store (memory, SQLite, Redis), and what
only the SQLite and Redis stores promise: several processes, a server that
goes away, a pool that waits.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import RedisServer

from flask_session_bridge import MemoryStore
from flask_session_bridge import SessionLockTimeout
from flask_session_bridge import StoreUnavailable
from flask_session_bridge.leases import Leases
from flask_session_bridge.stores.base import Record
from flask_session_bridge.stores.redis import RedisStore
from flask_session_bridge.stores.sqlite import SQLiteStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_store(kind, tmp_path, request, clock=None):
    """An empty store of ``kind``; memory and SQLite read ``clock`` if given."""
    options = {} if clock is None else {"clock": clock}
    if kind == "memory":
        return MemoryStore(**options)
    if kind == "sqlite":
        return SQLiteStore(str(tmp_path / "sessions.db"), **options)
    server = request.getfixturevalue("redis_server")
    if server.process is None:  # a test stopped it
        server.start()
    return RedisStore(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:")


@pytest.fixture(params=["memory", "sqlite", "redis"])
def timed(request, tmp_path):
    """``(store, advance)``: each store kind, empty, and a function that
    moves its clock. Redis keeps its own time, so for it ``advance`` sleeps.
    """
    if request.param == "redis":
        return make_store("redis", tmp_path, request), time.sleep
    clock = FakeClock()
    return make_store(request.param, tmp_path, request, clock), clock.advance


@pytest.fixture
def store(timed):
    return timed[0]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def live_store(request, tmp_path):
    """Each store kind on the real clock, for leases that threads renew."""
    return make_store(request.param, tmp_path, request)


def new_id() -> str:
    """An id shaped like the bridge's public ids."""
    return secrets.token_hex(32)


def put(store, session_id, client_id, data="{}", max_age=60.0, link=True):
    """Lock, write and unlock, as the bridge does; returns ``is_new``."""
    token, _ = store.lock(session_id, 5.0, 2.0)
    return store.save(session_id, Record(client_id, data), max_age, token, link)


def assert_held(store, session_id):
    with pytest.raises(SessionLockTimeout):
        store.lock(session_id, 5.0, 0)


def assert_free(store, session_id):
    token, _ = store.lock(session_id, 5.0, 0)
    store.release(session_id, token, None)


# The contract, on every store.


def test_lock_reads_the_session_in_the_same_step(store):
    s, c = new_id(), new_id()
    token, record = store.lock(s, 5.0, 1.0)
    assert isinstance(token, str)
    assert record is None  # a session need not exist to be locked
    store.release(s, token, None)
    put(store, s, c, '{"user":"alice"}')
    other, record = store.lock(s, 5.0, 1.0)
    assert record == Record(c, '{"user":"alice"}')
    assert other != token


def test_data_round_trips_exactly(store):
    s, c = new_id(), new_id()
    data = '{"text":"line\\nnext","u":"\u00e9\u2603\U0001f600"}\nraw newline\n' + "x" * 100_000
    put(store, s, c, data)
    assert store.get(s) == Record(c, data)
    assert store.get(new_id()) is None


def test_a_held_lock_makes_others_wait_then_time_out(store):
    s = new_id()
    store.lock(s, 5.0, 1.0)
    start = time.monotonic()
    with pytest.raises(SessionLockTimeout) as info:
        store.lock(s, 5.0, 0.2)
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 2.0
    assert info.value.session_id == s


def test_locks_are_per_session(store):
    s1, s2 = new_id(), new_id()
    store.lock(s1, 5.0, 1.0)
    assert_free(store, s2)


def test_a_waiter_gets_the_lock_and_the_holders_write(store):
    s, c = new_id(), new_id()
    locked = threading.Event()

    def holder():
        token, _ = store.lock(s, 5.0, 1.0)
        locked.set()
        time.sleep(0.2)
        store.save(s, Record(c, "written by holder"), 60.0, token, True)

    thread = threading.Thread(target=holder)
    thread.start()
    assert locked.wait(5)
    _, record = store.lock(s, 5.0, 5.0)
    assert record == Record(c, "written by holder")
    thread.join()


def test_no_update_is_lost_under_contention(store):
    # Thousands of read-modify-writes from 16 threads on one session, each
    # yielding between its read and its write as a handler would: a lock that
    # does not exclude loses some of them.
    s, c = new_id(), new_id()
    put(store, s, c, "0")
    acknowledged = [0] * 16
    errors = []

    def work(n):
        try:
            for _ in range(150):
                token, record = store.lock(s, 30.0, 60.0)
                time.sleep(0)
                store.save(s, Record(c, str(int(record.data) + 1)), 60.0, token, False)
                acknowledged[n] += 1
        except Exception as e:  # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(acknowledged) == 16 * 150
    assert store.get(s) == Record(c, str(sum(acknowledged)))


def test_a_waiter_is_woken_by_the_release_not_by_the_lease(store):
    # The waiter must not sleep until the holder's 30 s lease runs out.
    s, c = new_id(), new_id()
    token, _ = store.lock(s, 30.0, 1.0)
    taken = []

    def waiter():
        store.lock(s, 30.0, 20.0)
        taken.append(time.monotonic())

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.1)  # let it start waiting
    assert taken == []
    released = time.monotonic()
    store.save(s, Record(c, "x"), 60.0, token, True)
    thread.join(25)
    assert len(taken) == 1
    assert taken[0] - released < 1.0


def test_an_expired_lock_is_free_again(timed):
    # Its holder crashed, or is too slow: the next one takes the lock, and the
    # old holder can no longer write.
    store, advance = timed
    s, c = new_id(), new_id()
    put(store, s, c, "before")
    stale, _ = store.lock(s, 0.2, 1.0)
    assert_held(store, s)
    advance(0.3)
    fresh, record = store.lock(s, 5.0, 0)
    assert record == Record(c, "before")
    with pytest.raises(SessionLockTimeout):
        store.save(s, Record(c, "stale write"), 60.0, stale, True)
    assert store.get(s) == Record(c, "before")
    assert_held(store, s)  # the stale save did not release the new holder's lock
    store.save(s, Record(c, "fresh write"), 60.0, fresh, True)
    assert store.get(s) == Record(c, "fresh write")


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_a_waiter_takes_a_dead_holders_lock_when_its_lease_ends(kind, tmp_path, request):
    # On the real clock: nobody releases, so nothing wakes the waiter but
    # the end of the lease; it must not sleep through to its own timeout.
    store = make_store(kind, tmp_path, request)
    s = new_id()
    store.lock(s, 0.5, 1.0)
    started = time.monotonic()
    store.lock(s, 5.0, 10.0)
    assert 0.4 <= time.monotonic() - started < 1.5


def test_renew_extends_the_lease_of_its_holder(timed):
    store, advance = timed
    s, c = new_id(), new_id()
    token, _ = store.lock(s, 0.5, 1.0)
    advance(0.3)
    assert store.renew(s, token, 0.5) is True
    advance(0.3)  # 0.6 s after the lock: expired, were it not renewed
    assert_held(store, s)
    assert store.save(s, Record(c, "kept"), 60.0, token, True) is True
    assert store.get(s) == Record(c, "kept")
    assert_free(store, s)


def test_renew_of_a_lost_lock_changes_nothing(timed):
    store, advance = timed
    s, c = new_id(), new_id()
    # Another holder's token cannot extend a lease, nor take the lock.
    token, _ = store.lock(s, 0.5, 1.0)
    assert store.renew(s, secrets.token_hex(16), 60.0) is False
    advance(0.6)
    assert_free(store, s)
    # An expired lease cannot be renewed, even when nobody took the lock...
    stale, _ = store.lock(s, 0.2, 1.0)
    advance(0.3)
    assert store.renew(s, stale, 60.0) is False
    assert_free(store, s)
    # ...nor once another holder did, whose lock it leaves alone.
    stale, _ = store.lock(s, 0.2, 1.0)
    advance(0.3)
    fresh, _ = store.lock(s, 5.0, 0)
    assert store.renew(s, stale, 60.0) is False
    assert_held(store, s)
    assert store.save(s, Record(c, "fresh"), 60.0, fresh, True) is True
    # A released lock is not brought back.
    token, _ = store.lock(s, 5.0, 1.0)
    store.release(s, token, None)
    assert store.renew(s, token, 60.0) is False
    assert_free(store, s)


def test_leases_keep_a_long_holders_lock_and_only_while_held(live_store):
    # A handler that works three times the lease keeps its lock while Leases
    # renews it; nobody else gets in meanwhile. Once it stops renewing (the
    # holder crashed), the lock is free within the lease.
    store = live_store
    s, c = new_id(), new_id()
    expire = 0.6
    leases = Leases(store, expire)
    token, _ = store.lock(s, expire, 1.0)
    leases.hold(s, token)
    started = time.monotonic()
    while time.monotonic() - started < 3 * expire:
        assert_held(store, s)
        time.sleep(expire / 6)
    assert store.save(s, Record(c, "after the long work"), 60.0, token, True) is True
    leases.drop(token)

    token, _ = store.lock(s, expire, 1.0)
    leases.hold(s, token)
    time.sleep(expire)
    leases.drop(token)  # the watchdog stops renewing, as if its process died
    dropped = time.monotonic()
    other, record = store.lock(s, 5.0, 10.0)
    assert record == Record(c, "after the long work")
    assert time.monotonic() - dropped < 1.5 * expire
    with pytest.raises(SessionLockTimeout):
        store.save(s, Record(c, "too late"), 60.0, token, True)


def test_save_with_an_expired_token_writes_nothing(timed):
    store, advance = timed
    s, c, other_client = new_id(), new_id(), new_id()
    put(store, s, c, "old")
    token, _ = store.lock(s, 0.2, 1.0)
    advance(0.3)
    with pytest.raises(SessionLockTimeout) as info:
        store.save(s, Record(other_client, "new"), 60.0, token, True)
    assert info.value.session_id == s
    assert store.get(s) == Record(c, "old")
    assert store.get_session_id(other_client) is None
    assert store.get_session_id(c) == s


def test_save_with_a_foreign_token_writes_nothing_and_keeps_the_lock(store):
    s, c = new_id(), new_id()
    token, _ = store.lock(s, 5.0, 1.0)
    with pytest.raises(SessionLockTimeout):
        store.save(s, Record(c, "intruder"), 60.0, secrets.token_hex(16), True)
    assert store.get(s) is None
    assert store.get_session_id(c) is None
    assert_held(store, s)
    assert store.save(s, Record(c, "holder"), 60.0, token, True) is True


def test_save_says_whether_it_created_the_record(timed):
    store, advance = timed
    s, c = new_id(), new_id()
    assert put(store, s, c, "1") is True
    assert put(store, s, c, "2") is False
    token, _ = store.lock(s, 5.0, 1.0)
    store.delete(s, token)
    assert put(store, s, c, "3", max_age=0.2) is True
    advance(0.3)
    assert put(store, s, c, "4") is True  # the old one had expired


def test_save_releases_the_lock(store):
    s, c = new_id(), new_id()
    put(store, s, c)
    assert_free(store, s)


def test_a_linking_save_points_the_client_at_the_session(store):
    s1, s2, c = new_id(), new_id(), new_id()
    assert store.get_session_id(c) is None
    put(store, s1, c, link=True)
    assert store.get_session_id(c) == s1
    put(store, s2, c, link=True)
    assert store.get_session_id(c) == s2
    assert store.get(s1) == Record(c, "{}")  # the old session is left alone


def test_an_unlinked_save_neither_creates_nor_repoints_the_mapping(store):
    s1, s2, c = new_id(), new_id(), new_id()
    put(store, s1, c, link=False)
    assert store.get_session_id(c) is None
    put(store, s1, c, link=True)
    put(store, s2, c, link=False)
    assert store.get_session_id(c) == s1


def test_an_unlinked_save_refreshes_a_mapping_that_points_here(timed):
    store, advance = timed
    s, c = new_id(), new_id()
    put(store, s, c, max_age=1.0, link=True)
    advance(0.6)
    put(store, s, c, max_age=1.0, link=False)
    advance(0.6)
    assert store.get_session_id(c) == s
    assert store.get(s) is not None


def test_release_with_max_age_touches_session_and_mapping(timed):
    store, advance = timed
    touched, untouched = (new_id(), new_id()), (new_id(), new_id())
    put(store, *touched, max_age=1.0)
    put(store, *untouched, max_age=1.0)
    advance(0.6)
    for s, _ in (touched, untouched):
        token, _ = store.lock(s, 5.0, 1.0)
        store.release(s, token, 1.0 if s == touched[0] else None)
        assert_free(store, s)
    advance(0.6)
    assert store.get(touched[0]) == Record(touched[1], "{}")
    assert store.get_session_id(touched[1]) == touched[0]
    assert store.get(untouched[0]) is None
    assert store.get_session_id(untouched[1]) is None


def test_release_leaves_a_mapping_that_points_elsewhere(timed):
    store, advance = timed
    s1, s2, c = new_id(), new_id(), new_id()
    put(store, s1, c, max_age=0.5)
    put(store, s2, c, max_age=0.5)
    token, _ = store.lock(s1, 5.0, 1.0)
    store.release(s1, token, 60.0)
    advance(0.6)
    assert store.get(s1) is not None
    assert store.get_session_id(c) is None  # s2's mapping expired with s2


def test_a_stale_token_neither_touches_nor_unlocks(timed):
    store, advance = timed
    s, c = new_id(), new_id()
    put(store, s, c, max_age=0.5)
    stale, _ = store.lock(s, 0.1, 1.0)
    advance(0.15)
    store.lock(s, 5.0, 0)
    store.release(s, stale, 60.0)
    assert_held(store, s)
    advance(0.45)
    assert store.get(s) is None


def test_delete_removes_the_session_and_its_mapping(store):
    s, c = new_id(), new_id()
    put(store, s, c, "data")
    token, _ = store.lock(s, 5.0, 1.0)
    assert store.delete(s, token) == Record(c, "data")
    assert store.get(s) is None
    assert store.get_session_id(c) is None
    assert_free(store, s)
    token, _ = store.lock(s, 5.0, 1.0)
    assert store.delete(s, token) is None
    assert_free(store, s)


def test_delete_leaves_a_mapping_that_points_elsewhere(store):
    s1, s2, c = new_id(), new_id(), new_id()
    put(store, s1, c, "one")
    put(store, s2, c, "two")
    token, _ = store.lock(s1, 5.0, 1.0)
    assert store.delete(s1, token) == Record(c, "one")
    assert store.get_session_id(c) == s2
    assert store.get(s2) == Record(c, "two")


def test_sessions_expire_and_cleanup_removes_exactly_the_expired(timed):
    store, advance = timed
    old, old_client = new_id(), new_id()
    live, live_client = new_id(), new_id()
    put(store, old, old_client, "old", max_age=0.2)
    put(store, live, live_client, "live", max_age=60.0)
    advance(0.3)
    # Invisible before any cleanup.
    assert store.get(old) is None
    assert store.get_session_id(old_client) is None
    token, record = store.lock(old, 5.0, 1.0)
    assert record is None
    store.release(old, token, None)

    # Redis expired the keys itself; its expiry index still reports them.
    assert store.cleanup() == [(old, old_client)]
    assert store.cleanup() == []
    assert store.get(old) is None
    assert store.get(live) == Record(live_client, "live")
    assert store.get_session_id(live_client) == live


def test_cleanup_spares_a_session_whose_expiry_was_pushed_back(timed):
    store, advance = timed
    touched, client = new_id(), new_id()
    put(store, touched, client, "data", max_age=0.5)
    token, _ = store.lock(touched, 5.0, 1.0)
    store.release(touched, token, 60.0)  # a touch: 60 s from now
    advance(0.6)
    assert store.cleanup() == []
    assert store.get(touched) == Record(client, "data")
    assert store.get_session_id(client) == touched


def test_memory_store_expiry_index_stays_bounded_under_touches():
    # Every touch records a new expiry; the index must not keep them all.
    store = MemoryStore()
    session_id, client = new_id(), new_id()
    put(store, session_id, client)
    for _ in range(5000):
        token, _ = store.lock(session_id, 5.0, 1.0)
        store.release(session_id, token, 60.0)
    assert len(store._deadlines) <= 1024 + 2
    assert store.cleanup() == []
    assert store.get(session_id) == Record(client, "{}")


# SQLite: one file, several processes.


def test_sqlite_data_and_locks_survive_reopening(tmp_path):
    path = str(tmp_path / "sessions.db")
    first = SQLiteStore(path)
    s, c = new_id(), new_id()
    put(first, s, c, "kept")
    token, _ = first.lock(s, 5.0, 1.0)

    second = SQLiteStore(path)
    assert second.get(s) == Record(c, "kept")
    assert second.get_session_id(c) == s
    assert_held(second, s)
    first.release(s, token, None)
    assert_free(second, s)


def test_sqlite_creates_the_folder(tmp_path):
    path = tmp_path / "instance" / "deeper" / "sessions.db"
    store = SQLiteStore(str(path))
    put(store, new_id(), new_id())
    assert path.exists()


CHILD = """
import sys
from flask_session_bridge.stores.base import Record
from flask_session_bridge.stores.sqlite import SQLiteStore

store = SQLiteStore(sys.argv[1])
token, _ = store.lock(sys.argv[2], 10.0, 5.0)
print("locked", flush=True)
sys.stdin.readline()  # holds the lock until the parent has tried it
store.save(sys.argv[2], Record("child", "written by child"), 60.0, token, True)
"""


def test_sqlite_lock_holds_across_processes(tmp_path):
    path = str(tmp_path / "sessions.db")
    store = SQLiteStore(path)
    s = new_id()
    env = {**os.environ, "PYTHONPATH": ROOT}
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, path, s],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(SessionLockTimeout):
            store.lock(s, 5.0, 0.1)
        child.stdin.write("go\n")
        child.stdin.flush()
        _, record = store.lock(s, 5.0, 10.0)
        assert record == Record("child", "written by child")
        assert child.wait(10) == 0


def test_sqlite_unusable_path_is_store_unavailable(tmp_path):
    with pytest.raises(StoreUnavailable) as info:
        SQLiteStore(str(tmp_path))  # a folder, not a file
    assert isinstance(info.value.original_error, sqlite3.Error)

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailable) as info:
        SQLiteStore(str(blocker / "sessions.db"))
    assert isinstance(info.value.original_error, OSError)


def test_sqlite_busy_database_is_store_unavailable_then_recovers(tmp_path):
    path = str(tmp_path / "sessions.db")
    store = SQLiteStore(path, timeout=0.2)
    s, c = new_id(), new_id()
    put(store, s, c, "data")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the database
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            store.lock(s, 5.0, 5.0)
        assert time.monotonic() - start < 2.0
        assert isinstance(info.value.original_error, sqlite3.OperationalError)
        assert store.get(s) == Record(c, "data")  # readers are not blocked (WAL)
    finally:
        other.rollback()
        other.close()
    assert put(store, s, c, "again") is False
    assert store.get(s) == Record(c, "again")


def test_sqlite_cleanup_in_batches_removes_every_expired_row(tmp_path, monkeypatch):
    path = str(tmp_path / "sessions.db")
    clock = FakeClock()
    store = SQLiteStore(path, clock=clock)
    monkeypatch.setattr(store, "cleanup_batch", 3)
    expired = {(new_id(), new_id()) for _ in range(10)}
    for s, c in expired:
        put(store, s, c, max_age=0.1)
    live = (new_id(), new_id())
    put(store, *live)
    stale = new_id()
    store.lock(stale, 0.1, 1.0)  # a crashed holder's lock
    clock.advance(0.2)
    assert set(store.cleanup()) == expired
    assert store.get(live[0]) is not None
    db = sqlite3.connect(path)
    try:
        counts = [
            db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("bridge_sessions", "bridge_clients", "bridge_locks")
        ]
    finally:
        db.close()
    assert counts == [1, 1, 0]


GREEN_PREAMBLE = """
import json, os, resource, sys, threading, time, warnings
warnings.simplefilter("ignore")
if sys.argv[1] == "eventlet":
    import eventlet
    eventlet.monkey_patch()
else:
    from gevent import monkey
    monkey.patch_all()
from flask_session_bridge.stores.base import Record
from flask_session_bridge.stores.sqlite import SQLiteStore
# Threads are green threads from here on.
"""

GREEN_BUSY = GREEN_PREAMBLE + """
store = SQLiteStore(sys.argv[2], timeout=10.0)
ticks = []

def ticker():
    while True:
        ticks.append(time.monotonic())
        time.sleep(0.005)

threading.Thread(target=ticker, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()  # the parent holds the database now
started = time.monotonic()
store.lock(sys.argv[3], 5.0, 10.0)
ended = time.monotonic()
during = [started, *(t for t in ticks if t >= started), ended]
print(json.dumps({"took": ended - started, "gap": max(b - a for a, b in zip(during, during[1:]))}))
"""


def run_green(script, *args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )


@pytest.mark.parametrize("hub", ["eventlet", "gevent"])
def test_sqlite_busy_database_does_not_stop_other_green_threads(tmp_path, hub):
    # Another process holds the file for a second; under eventlet or gevent,
    # SQLite's own busy wait would freeze every green thread of the worker
    # that long.
    path = str(tmp_path / "sessions.db")
    SQLiteStore(path)
    with run_green(GREEN_BUSY, hub, path, new_id()) as child:
        assert child.stdout.readline().strip() == "ready"
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            child.stdin.write("go\n")
            child.stdin.flush()
            time.sleep(1.0)
        finally:
            other.rollback()
            other.close()
        result = json.loads(child.stdout.readline())
        assert child.wait(10) == 0
    assert 0.9 <= result["took"] < 5.0  # it waited for the database, then locked
    assert result["gap"] < 0.2  # while the rest of the worker went on


GREEN_CROWD = GREEN_PREAMBLE + """
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
store = SQLiteStore(sys.argv[2])
sessions = ["%064x" % n for n in range(10)]
acknowledged = [0]

def event(n):
    session_id = sessions[n % len(sessions)]
    token, record = store.lock(session_id, 5.0, 60.0)
    time.sleep(0.001)  # the handler runs; other green threads too
    count = int(record.data) + 1 if record is not None else 1
    store.save(session_id, Record("client", str(count)), 60.0, token, True)
    acknowledged[0] += 1

def fds():
    return len(os.listdir("/proc/self/fd"))

before = fds()
rounds = []
for _ in range(2):
    crowd = [threading.Thread(target=event, args=(n,)) for n in range(1000)]
    for thread in crowd:
        thread.start()
    for thread in crowd:
        thread.join()
    rounds.append(fds())
stored = sum(int(store.get(s).data) for s in sessions)
print(json.dumps({"before": before, "rounds": rounds, "acknowledged": acknowledged[0],
                  "stored": stored}))
"""


@pytest.mark.parametrize("hub", ["eventlet", "gevent"])
def test_sqlite_1000_green_threads_share_a_few_connections(tmp_path, hub):
    # Each round is 1,000 green threads at once under a 256-file limit: a
    # connection per green thread runs out of files at once.
    with run_green(GREEN_CROWD, hub, str(tmp_path / "sessions.db")) as child:
        out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    result = json.loads(out)
    assert result["acknowledged"] == result["stored"] == 2000
    # Each connection opens the file, its WAL and its shared memory.
    assert result["rounds"][0] - result["before"] <= 3 * 4
    assert result["rounds"][1] == result["rounds"][0]


# Redis: prefixes, pools, a server that goes away.


@pytest.fixture
def own_redis():
    """A Redis of its own, that a test may stop or pause."""
    server = RedisServer()
    server.start()
    yield server
    if server.process is not None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def test_redis_prefixes_keep_stores_apart(redis_server):
    import redis

    raw = redis.Redis.from_url(redis_server.url)
    tag = uuid.uuid4().hex[:8]
    a = RedisStore(redis_server.url, prefix=f"{tag}-a:")
    b = RedisStore(redis_server.url, prefix=f"{tag}-b:")
    s, c = new_id(), new_id()
    raw.set(f"{tag}-other:s:{s}", f"{c}\nforeign")
    raw.set(f"{tag}-other:c:{c}", s)
    assert a.get(s) is None
    assert a.get_session_id(c) is None

    put(a, s, c, "in a")
    put(b, s, c, "in b")
    assert a.get(s) == Record(c, "in a")
    assert b.get(s) == Record(c, "in b")
    a.lock(s, 5.0, 1.0)
    assert_free(b, s)

    token, _ = b.lock(s, 5.0, 1.0)
    assert b.delete(s, token) == Record(c, "in b")
    assert a.get(s) == Record(c, "in a")
    assert a.get_session_id(c) == s
    assert raw.get(f"{tag}-other:s:{s}") == f"{c}\nforeign".encode()
    keys = {k.decode() for k in raw.scan_iter(f"*{tag}*")}
    assert all(k.startswith((f"{tag}-a:", f"{tag}-other:")) for k in keys)
    raw.close()


def test_redis_url_store_waits_for_a_pooled_connection(redis_server):
    import redis

    name = f"pool-{uuid.uuid4().hex[:8]}"
    store = RedisStore(f"{redis_server.url}?max_connections=4&client_name={name}")
    assert isinstance(store.client.connection_pool, redis.BlockingConnectionPool)
    ids = [(new_id(), new_id()) for _ in range(200)]
    errors = []
    start = threading.Barrier(len(ids))

    def work(s, c):
        try:
            start.wait()
            token, _ = store.lock(s, 5.0, 10.0)
            store.save(s, Record(c, s), 60.0, token, True)
        except Exception as e:  # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=pair) for pair in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(store.get(s) == Record(c, s) for s, c in ids)
    raw = redis.Redis.from_url(redis_server.url)
    assert 1 <= sum(1 for client in raw.client_list() if client["name"] == name) <= 4
    raw.close()


def test_redis_takes_the_users_client_as_is(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisStore(client, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    assert store.client is client
    s, c = new_id(), new_id()
    assert put(store, s, c, "data") is True
    assert store.get(s) == Record(c, "data")
    assert store.get_session_id(c) == s
    token, record = store.lock(s, 5.0, 1.0)
    assert record == Record(c, "data")
    assert store.delete(s, token) == Record(c, "data")
    client.close()


def test_redis_down_is_store_unavailable_and_recovers(own_redis):
    import redis

    store = RedisStore(own_redis.url)
    s, c = new_id(), new_id()
    put(store, s, c)
    token, _ = store.lock(s, 5.0, 1.0)
    own_redis.stop()
    calls = [
        lambda: store.get(s),
        lambda: store.get_session_id(c),
        lambda: store.lock(s, 5.0, 1.0),
        lambda: store.save(s, Record(c, "{}"), 60.0, token, True),
        lambda: store.delete(s, token),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert isinstance(info.value.original_error, redis.exceptions.RedisError)
    # A release waits for no answer: it is queued, and once it fails it is
    # remembered, to be sent again when Redis answers.
    store._unsure.clear()
    store.release(s, token, 60.0)
    with pytest.raises(StoreUnavailable):
        store.renew(s, token, 5.0)  # the round trip the release goes with
    assert store._unsure == {token: s}
    own_redis.start()  # same port, empty
    assert store.get(s) is None
    assert put(store, s, c) is True


def test_redis_that_stops_answering_fails_fast(own_redis):
    store = RedisStore(f"{own_redis.url}?socket_timeout=0.5")
    s = new_id()
    assert store.get(s) is None
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.get(s)
    # One timeout, no retries piled on top.
    assert time.monotonic() - start < 2.0


def test_a_lock_taken_by_a_call_that_timed_out_is_freed(own_redis):
    # The timed-out script still runs once Redis answers again: its lock,
    # whose token nobody got, must not block the session until it expires.
    store = RedisStore(f"{own_redis.url}?socket_timeout=0.5")
    s, c = new_id(), new_id()
    put(store, s, c, "data")
    token, _ = store.lock(s, 30.0, 1.0)  # Redis knows the script now
    store.release(s, token, None)
    assert store.renew(s, token, 30.0) is False  # the release went first
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailable):
            store.lock(s, 30.0, 1.0)
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert len(store._unsure) == 1
    token, record = store.lock(s, 30.0, 1.0)  # would wait 30 s for the stale lock
    assert record == Record(c, "data")
    assert store._unsure == {}
    store.release(s, token, None)


def test_a_retried_lock_script_does_not_wait_for_itself(own_redis):
    # A client with retries may send a locking script again after it ran.
    store = RedisStore(own_redis.url)
    s, c = new_id(), new_id()
    put(store, s, c)
    keys = store._keys(s)
    assert store._lock(keys=keys, args=["token", 5000, 1000])[0] == 1
    assert store._lock(keys=keys, args=["token", 5000, 1000])[0] == 1
    assert store._lock(keys=keys, args=["other", 5000, 1000])[0] == 0


def test_package_imports_without_redis():
    script = (
        "import sys; sys.modules['redis'] = None\n"
        "import flask_session_bridge\n"
        "try:\n"
        "    flask_session_bridge.RedisStore('redis://127.0.0.1:6379/0')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "pip install" in out
    assert "flask_session_bridge[redis]" in out


def test_a_release_reaches_redis_without_another_call(own_redis):
    # A release is queued for the process's next round trip; with none
    # coming, it goes on its own at once: another worker waiting for the
    # lock is let in well before the lease (5 s) would free it.
    holder, other = RedisStore(own_redis.url), RedisStore(own_redis.url)
    s, c = new_id(), new_id()
    put(holder, s, c, "data")
    token, _ = holder.lock(s, 5.0, 1.0)
    holder.release(s, token, 60.0)
    token, record = other.lock(s, 5.0, 1.0)  # SessionLockTimeout if left to the lease
    assert record == Record(c, "data")
    other.release(s, token, None)


def test_a_release_goes_before_the_same_process_locks_again(own_redis):
    store = RedisStore(own_redis.url)
    s, c = new_id(), new_id()
    put(store, s, c, "data")
    for _ in range(50):
        token, _ = store.lock(s, 5.0, 1.0)
        store.release(s, token, 60.0)
        # Taken at once: the queued release went first, in the same round trip.
        token, _ = store.lock(s, 5.0, 0.0)
        store.release(s, token, None)


def test_a_read_touches_unless_the_expiry_was_just_pushed(own_redis):
    # Many read-only events a second on one session push its expiry back
    # once a second, not at each event: the session lives at most a second
    # less than if each had touched it. An older push is always renewed.
    import redis

    client = redis.Redis.from_url(own_redis.url)
    store = RedisStore(own_redis.url)
    s, c = new_id(), new_id()
    put(store, s, c, "data")
    key = store._keys(s)[1]
    for ttl_ms, touched in ((900_000, True), (999_950, False)):
        client.pexpire(key, ttl_ms)  # pushed back 100 s or 50 ms ago
        token, _ = store.lock(s, 5.0, 1.0)
        store.release(s, token, 1000.0)
        assert store.renew(s, token, 5.0) is False  # the release has run
        assert (client.pttl(key) > 999_950) is touched


def test_a_write_soon_after_a_push_keeps_the_expiry(own_redis):
    # A socket's writes many times a second push the expiry of the record,
    # its mapping and its indexes back once a second, together: never a
    # record whose index says it expired earlier than it does by more.
    import redis

    client = redis.Redis.from_url(own_redis.url)
    store = RedisStore(own_redis.url)
    s, c = new_id(), new_id()
    put(store, s, c, "data", max_age=1000.0)
    key, index = store._keys(s)[1], store._expiry_key(s)
    for ttl_ms, pushed in ((900_000, True), (999_950, False)):
        client.pexpire(key, ttl_ms)  # pushed back 100 s or 50 ms ago
        score = client.zscore(index, next(iter(client.zrange(index, 0, -1))))
        token, _ = store.lock(s, 5.0, 1.0)
        store.save(s, Record(c, f"write {ttl_ms}"), 1000.0, token, False)
        assert store.get(s) == Record(c, f"write {ttl_ms}")
        assert (client.pttl(key) > 999_950) is pushed
        new_score = client.zscore(index, next(iter(client.zrange(index, 0, -1))))
        assert (new_score > score) is pushed
    # A record that expired while locked gets its lifetime back, not none.
    token, _ = store.lock(s, 5.0, 1.0)
    client.persist(key)
    store.save(s, Record(c, "late"), 1000.0, token, False)
    assert client.pttl(key) > 0


def test_a_process_that_exits_sends_its_queued_releases(own_redis):
    # A worker restarted after its last request (max_requests, a deploy) or a
    # script ending after session_scope: its last release goes at exit, so
    # the others do not wait for the lease (5 s).
    script = (
        "import sys\n"
        "from flask_session_bridge.stores import redis as redis_store\n"
        "redis_store._LINGER = 60.0  # only the exit sends it\n"
        "store = redis_store.RedisStore(sys.argv[1])\n"
        "token, _ = store.lock('s', 5.0, 1.0)\n"
        "store.release('s', token, None)\n"
    )
    subprocess.run([sys.executable, "-c", script, own_redis.url], check=True, timeout=30)
    store = RedisStore(own_redis.url)
    token, _ = store.lock("s", 5.0, 0)
    store.release("s", token, None)


def test_a_child_forked_while_a_release_is_in_flight_does_not_hang(own_redis):
    # The child inherits the parent's list of releases in flight but not the
    # thread carrying them: its lock must still end within its timeout.
    script = (
        "import os, signal, sys, threading, time\n"
        "import redis\n"
        "from flask_session_bridge.stores import redis as redis_store\n"
        "redis_store._LINGER = 60.0\n"
        "store = redis_store.RedisStore(sys.argv[1])\n"
        "token, _ = store.lock('x', 5.0, 1.0)\n"
        "store.release('x', token, None)\n"
        "redis.Redis.from_url(sys.argv[1]).client_pause(1500)\n"
        "threading.Thread(target=store._flush).start()\n"
        "while 'x' not in store._in_flight: time.sleep(0.01)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    signal.alarm(10)\n"
        "    token, _ = store.lock('x', 5.0, 5.0)\n"
        "    os._exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('killed' if os.WIFSIGNALED(status) else 'ended')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, own_redis.url],
        check=True, timeout=30, capture_output=True, text=True,
    )
    assert done.stdout.strip() == "ended"


def test_a_redis_that_lost_its_scripts_is_used_as_before(own_redis):
    # A restart with persistence or SCRIPT FLUSH empties Redis's script
    # cache: every kind of round trip loads the scripts again and goes on.
    import redis

    client = redis.Redis.from_url(own_redis.url)
    store = RedisStore(own_redis.url)
    s, c = new_id(), new_id()
    put(store, s, c, "one")
    client.script_flush()
    token, record = store.lock(s, 5.0, 1.0)  # one script: redis-py's command path
    assert record == Record(c, "one")
    client.script_flush()
    assert store.save(s, Record(c, "two"), 60.0, token, True) is False  # a pipeline
    client.script_flush()
    token, _ = store.lock(s, 5.0, 1.0)
    store.release(s, token, 60.0)
    client.script_flush()
    assert store.renew(s, token, 5.0) is False  # carried the release first
    assert store.get(s) == Record(c, "two")
