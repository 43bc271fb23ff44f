"""A store in one SQLite file: persistent, shared by processes on one host."""

from __future__ import annotations

import dataclasses
import os
import secrets
import sqlite3
import threading
import time
import typing as t

from ..exceptions import SessionLockTimeout
from ..exceptions import StoreUnavailable
from .base import ACTIVE_EVERY
from .base import Record
from .waiting import Waiters

_T = t.TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bridge_sessions (
    id TEXT PRIMARY KEY, client_id TEXT NOT NULL, data TEXT NOT NULL, expires REAL NOT NULL,
    user_id TEXT, created REAL NOT NULL DEFAULT 0, last_active REAL NOT NULL DEFAULT 0,
    user_agent TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bridge_sessions_expires ON bridge_sessions (expires);
CREATE TABLE IF NOT EXISTS bridge_clients (
    client_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bridge_clients_expires ON bridge_clients (expires);
CREATE TABLE IF NOT EXISTS bridge_locks (
    session_id TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
"""

#: Columns added since the first release, for files made before them.
_ADDED = {
    "user_id": "TEXT",
    "created": "REAL NOT NULL DEFAULT 0",
    "last_active": "REAL NOT NULL DEFAULT 0",
    "user_agent": "TEXT NOT NULL DEFAULT ''",
}

_FIELDS = "client_id, data, user_id, created, last_active, user_agent"


def _migrate(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)
    present = {row[1] for row in db.execute("PRAGMA table_info(bridge_sessions)")}
    for name, kind in _ADDED.items():
        if name not in present:
            db.execute(f"ALTER TABLE bridge_sessions ADD COLUMN {name} {kind}")
    # The user index: sessions_of reads one user's rows only.
    db.execute(
        "CREATE INDEX IF NOT EXISTS bridge_sessions_user ON bridge_sessions (user_id)"
        " WHERE user_id IS NOT NULL"
    )

#: Bounds of the poll for a lock held by another process, in seconds.
_POLL_FIRST, _POLL_MAX = 0.002, 0.05
#: Bounds of the pause between tries while another process writes.
_BUSY_FIRST, _BUSY_MAX = 0.001, 0.02


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


class SQLiteStore:
    """Sessions in an SQLite file (WAL mode). Survives restarts; locks are
    rows, so they hold across the processes of one host, and a crashed
    holder's lock expires. Expiry is indexed: cleanup reads only expired rows.

    Connections come from a small pool shared by all threads and green
    threads (1,000 sockets do not open 1,000 files); a caller waits for a
    free one. Writes of this process take turns on an in-process mutex, so
    they do not fight over SQLite's write lock; a write that finds the file
    busy (another process writes) pauses with :func:`time.sleep` and tries
    again, rather than letting SQLite's busy handler block the thread, which
    under eventlet or gevent would stop every green thread.

    Lock waiters do not poll a lock held through this store (the threads
    and green threads of one worker, the common case): they sleep until its
    holder lets go, which wakes one of them, or until its lease runs out.
    SQLite cannot signal another process: a lock held by another process is
    polled, every 2 ms at first, backing off to every 50 ms, so a lock of a
    crashed process is taken at most 50 ms after its lease ran out.

    :param path: The database file; its folder is created if missing.
    :param timeout: How long a call waits for the database when another
        process holds it (or for a free pooled connection) before failing
        with :class:`~flask_session_bridge.StoreUnavailable`. Writes are
        short, so this only runs out when something holds the file for long.
    :param pool_size: The most connections this store opens at once.
    :param clock: Wall-clock seconds, for the expiry of sessions, mappings
        and locks; several processes compare them, so it must be the same
        clock for all (tests pass a clock they move). Waiting (``timeout``,
        a lock's ``timeout``) is always in real time.
    :raise StoreUnavailable: the file cannot be opened or created.
    """

    #: Expired sessions removed per transaction by :meth:`cleanup`, so a
    #: large cleanup never holds the database for long.
    cleanup_batch = 1000

    def __init__(
        self,
        path: str,
        *,
        timeout: float = 10.0,
        pool_size: int = 4,
        clock: t.Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.pool_size = pool_size
        self._clock = clock
        # Built at construction, so eventlet's or gevent's patched primitives
        # are used when the app is created after monkey-patching.
        self._mutex = threading.Lock()
        self._pool_free = threading.Condition(self._mutex)
        self._writer = threading.Lock()
        self._start_pool()
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise StoreUnavailable(f"cannot create {folder}: {e}", original_error=e) from e
        self._run(_migrate, write=True)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r}>"

    def _start_pool(self) -> None:
        self._pid = os.getpid()
        self._idle: list[sqlite3.Connection] = []
        self._opened = 0
        #: Threads waiting for a connection.
        self._pool_waiting = 0
        #: session id -> (token, lease end) of each lock taken through this
        #: store and not yet let go.
        self._holders: dict[str, tuple[str, float]] = {}
        self._waiters = Waiters(self._mutex)

    # -- connections ------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are begun explicitly, as IMMEDIATE
        # where a read decides a write. No busy timeout: SQLite's busy
        # handler sleeps in C, which no event loop can interrupt; _run waits
        # instead.
        db = sqlite3.connect(
            self.path, timeout=0, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode, NORMAL loses no commit on a crash of the process,
            # only (possibly) the last ones on a power cut.
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _take_connection(self, deadline: float) -> sqlite3.Connection:
        with self._mutex:
            if self._pid != os.getpid():
                # A forked child must not use its parent's connections
                # (SQLite forbids it): leave them to the parent.
                self._start_pool()
            while not self._idle and self._opened >= self.pool_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreUnavailable(
                        f"SQLite store {self.path}: no free connection after"
                        f" {self.timeout:g}s"
                    )
                self._pool_waiting += 1
                try:
                    self._pool_free.wait(left)
                finally:
                    self._pool_waiting -= 1
            if self._idle:
                return self._idle.pop()
            self._opened += 1
        try:
            return self._connect()
        except BaseException:
            self._give_back(None)
            raise

    def _give_back(self, db: sqlite3.Connection | None) -> None:
        with self._mutex:
            if db is None:
                self._opened -= 1
            else:
                self._idle.append(db)
            if self._pool_waiting:
                self._pool_free.notify()

    def _run(self, work: t.Callable[[sqlite3.Connection], _T], write: bool = False) -> _T:
        """Run ``work`` on a pooled connection; while the database is busy,
        pause and try again until :attr:`timeout`.
        """
        deadline = time.monotonic() + self.timeout
        if write and not self._writer.acquire(timeout=self.timeout):
            raise StoreUnavailable(
                f"SQLite store {self.path}: writes of this process stuck for {self.timeout:g}s"
            )
        try:
            pause = _BUSY_FIRST
            while True:
                try:
                    db = self._take_connection(deadline)
                    try:
                        return work(db)
                    finally:
                        self._give_back(db)
                except sqlite3.Error as e:
                    left = deadline - time.monotonic()
                    if not _is_busy(e) or left <= 0:
                        raise StoreUnavailable(
                            f"SQLite store {self.path}: {e}", original_error=e
                        ) from e
                # Patched by eventlet and gevent: other green threads run.
                time.sleep(min(pause, left))
                pause = min(pause * 2, _BUSY_MAX)
        finally:
            if write:
                self._writer.release()

    def _transaction(self, work: t.Callable[[sqlite3.Connection], _T]) -> _T:
        def run(db: sqlite3.Connection) -> _T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (disk full, I/O error);
                # a transaction left open would break the pooled connection.
                if db.in_transaction:
                    db.rollback()
                raise
            return result

        return self._run(run, write=True)

    # -- reading ----------------------------------------------------------

    @staticmethod
    def _read(db: sqlite3.Connection, session_id: str, now: float) -> Record | None:
        row = db.execute(
            f"SELECT {_FIELDS} FROM bridge_sessions WHERE id = ? AND expires > ?",
            (session_id, now),
        ).fetchone()
        return Record(*row) if row is not None else None

    def get(self, session_id: str) -> Record | None:
        return self._run(lambda db: self._read(db, session_id, self._clock()))

    def get_session_id(self, client_id: str) -> str | None:
        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT session_id FROM bridge_clients WHERE client_id = ? AND expires > ?",
                (client_id, self._clock()),
            ).fetchone()
            return row[0] if row is not None else None

        return self._run(read)

    # -- locks ------------------------------------------------------------

    def lock(self, session_id: str, expire: float, timeout: float) -> tuple[str, Record | None]:
        token = secrets.token_hex(16)

        def attempt(db: sqlite3.Connection) -> tuple[bool, str, float, Record | None]:
            now = self._clock()
            if db.execute(
                "INSERT INTO bridge_locks (session_id, token, expires) VALUES (?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET token = excluded.token,"
                " expires = excluded.expires WHERE bridge_locks.expires <= ?",
                (session_id, token, now + expire, now),
            ).rowcount:
                record = self._read(db, session_id, now)
                # Before the commit, so that no waiter of this store takes
                # the lock for another process's and polls.
                with self._mutex:
                    self._holders[session_id] = (token, now + expire)
                return True, token, now + expire, record
            holder, expires = db.execute(
                "SELECT token, expires FROM bridge_locks WHERE session_id = ?", (session_id,)
            ).fetchone()
            return False, holder, expires, None

        deadline = time.monotonic() + timeout
        poll = _POLL_FIRST
        queue = None
        seen = 0
        taken = False
        try:
            while True:
                with self._mutex:
                    mine = self._holders.get(session_id)
                if mine is not None and mine[1] > self._clock():
                    # A thread of this store holds it: no need to ask the file.
                    holder, expires = mine
                else:
                    try:
                        taken, holder, expires, record = self._transaction(attempt)
                    except BaseException:
                        # Registered as the holder, but not committed.
                        self._let_go(session_id, token)
                        raise
                    if taken:
                        return token, record
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SessionLockTimeout(
                        f"session lock not free after {timeout:g}s", session_id
                    )
                # Sleep until the holder's lease runs out at the latest; a
                # holder in this store wakes us when it lets go, one of
                # another process cannot.
                pause = min(left, max(expires - self._clock(), 0.0))
                with self._mutex:
                    if self._holders.get(session_id, ("",))[0] != holder:
                        # Another process's (or let go just now).
                        pause = min(pause, poll)
                        poll = min(poll * 2, _POLL_MAX)
                    if queue is None:
                        queue = self._waiters.join(session_id)
                        seen = queue.releases
                    if queue.releases == seen:
                        queue.wake.wait(pause)
                    seen = queue.releases
        finally:
            if queue is not None:
                with self._mutex:
                    self._waiters.leave(session_id, queue, woken_in_vain=not taken)

    def _let_go(self, session_id: str, token: str) -> None:
        """Wake one thread waiting for the lock ``token`` held, if any."""
        with self._mutex:
            if self._holders.get(session_id, ("",))[0] == token:
                del self._holders[session_id]
            self._waiters.released(session_id)

    def renew(self, session_id: str, token: str, expire: float) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            now = self._clock()
            changed: int = db.execute(
                "UPDATE bridge_locks SET expires = ?"
                " WHERE session_id = ? AND token = ? AND expires > ?",
                (now + expire, session_id, token, now),
            ).rowcount
            if changed:
                with self._mutex:
                    if self._holders.get(session_id, ("",))[0] == token:
                        self._holders[session_id] = (token, now + expire)
            return changed == 1

        return self._transaction(write)

    @staticmethod
    def _holds(db: sqlite3.Connection, session_id: str, token: str, now: float) -> bool:
        return (
            db.execute(
                "SELECT 1 FROM bridge_locks WHERE session_id = ? AND token = ? AND expires > ?",
                (session_id, token, now),
            ).fetchone()
            is not None
        )

    @staticmethod
    def _unlock(db: sqlite3.Connection, session_id: str, token: str) -> None:
        db.execute(
            "DELETE FROM bridge_locks WHERE session_id = ? AND token = ?", (session_id, token)
        )

    # -- writing ----------------------------------------------------------

    def save(self, session_id: str, record: Record, max_age: float, token: str, link: bool) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            now = self._clock()
            if not self._holds(db, session_id, token, now):
                raise SessionLockTimeout("session lock expired before write-back", session_id)
            old = self._read(db, session_id, now)
            is_new = old is None
            if old is not None:
                row = dataclasses.replace(
                    record,
                    created=old.created, user_agent=old.user_agent, last_active=now
                )
            else:
                row = dataclasses.replace(record, created=now, last_active=now)
            db.execute(
                f"INSERT OR REPLACE INTO bridge_sessions (id, {_FIELDS}, expires)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, *dataclasses.astuple(row), now + max_age),
            )
            if link:
                db.execute(
                    "INSERT OR REPLACE INTO bridge_clients (client_id, session_id, expires)"
                    " VALUES (?, ?, ?)",
                    (record.client_id, session_id, now + max_age),
                )
            else:
                self._touch_client(db, record.client_id, session_id, now + max_age)
            self._unlock(db, session_id, token)
            return is_new

        try:
            return self._transaction(write)
        finally:
            self._let_go(session_id, token)

    @staticmethod
    def _touch_client(
        db: sqlite3.Connection, client_id: str, session_id: str, expires: float
    ) -> None:
        db.execute(
            "UPDATE bridge_clients SET expires = ? WHERE client_id = ? AND session_id = ?",
            (expires, client_id, session_id),
        )

    def release(self, session_id: str, token: str, max_age: float | None) -> None:
        def write(db: sqlite3.Connection) -> None:
            now = self._clock()
            if max_age is not None and self._holds(db, session_id, token, now):
                record = self._read(db, session_id, now)
                if record is not None:
                    active = now if now - record.last_active >= ACTIVE_EVERY else record.last_active
                    db.execute(
                        "UPDATE bridge_sessions SET expires = ?, last_active = ? WHERE id = ?",
                        (now + max_age, active, session_id),
                    )
                    self._touch_client(db, record.client_id, session_id, now + max_age)
            self._unlock(db, session_id, token)

        try:
            self._transaction(write)
        finally:
            self._let_go(session_id, token)

    def delete(self, session_id: str, token: str) -> Record | None:
        def write(db: sqlite3.Connection) -> Record | None:
            record = self._read(db, session_id, self._clock())
            db.execute("DELETE FROM bridge_sessions WHERE id = ?", (session_id,))
            if record is not None:
                db.execute(
                    "DELETE FROM bridge_clients WHERE client_id = ? AND session_id = ?",
                    (record.client_id, session_id),
                )
            self._unlock(db, session_id, token)
            return record

        try:
            return self._transaction(write)
        finally:
            self._let_go(session_id, token)

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        def read(db: sqlite3.Connection) -> list[tuple[str, Record]]:
            rows = db.execute(
                f"SELECT id, {_FIELDS} FROM bridge_sessions WHERE user_id = ? AND expires > ?",
                (user_id, self._clock()),
            ).fetchall()
            return [(row[0], Record(*row[1:])) for row in rows]

        return self._run(read)

    def cleanup(self) -> list[tuple[str, str]]:
        now = self._clock()
        batch = self.cleanup_batch

        def sessions(db: sqlite3.Connection) -> list[tuple[str, str]]:
            # The expires index makes this read only expired rows.
            rows = db.execute(
                "SELECT id, client_id FROM bridge_sessions WHERE expires <= ? LIMIT ?",
                (now, batch),
            ).fetchall()
            db.executemany("DELETE FROM bridge_sessions WHERE id = ?", [(row[0],) for row in rows])
            return [(row[0], row[1]) for row in rows]

        def clients(db: sqlite3.Connection) -> int:
            removed: int = db.execute(
                "DELETE FROM bridge_clients WHERE client_id IN"
                " (SELECT client_id FROM bridge_clients WHERE expires <= ? LIMIT ?)",
                (now, batch),
            ).rowcount
            return removed

        removed: list[tuple[str, str]] = []
        while True:
            found = self._transaction(sessions)
            removed.extend(found)
            if len(found) < batch:
                break
            # Let other threads, green threads and processes write between
            # batches.
            time.sleep(0)
        while self._transaction(clients) == batch:
            time.sleep(0)
        # Locks are deleted on release: only those of crashed holders are left.
        self._transaction(
            lambda db: db.execute("DELETE FROM bridge_locks WHERE expires <= ?", (now,))
        )
        return removed
