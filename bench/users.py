"""sessions_of costs a look-up of the user's sessions, not of all sessions.

For each store: one user with ``--mine`` sessions among ``--total``, against
the same user alone (``--mine`` among ``--mine``); prints the median time of
``store.sessions_of`` over ``--repeat`` runs. Memory and SQLite run at one
million sessions; Redis at 200,000 (filling a million takes longer than the
bench should). Redis needs ``redis-server`` on PATH (a throwaway server on
a free port). Sessions are written the way each store writes them (memory:
its ``save``; SQLite and Redis: the store's own rows and keys in bulk,
which a save would produce one by one)::

    python bench/users.py [--stores memory,sqlite,redis]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from flask_session_bridge import MemoryStore
from flask_session_bridge import Record
from flask_session_bridge import RedisStore
from flask_session_bridge import SQLiteStore
from flask_session_bridge.stores import redis as redis_module


def ids(n: int) -> list[str]:
    return [secrets.token_hex(32) for _ in range(n)]


def owner(i: int, mine: int) -> str:
    # The first ``mine`` sessions are ada's; the rest spread over 100,000 users.
    return "ada" if i < mine else f"user{i % 100_000}"


def fill_memory(store: MemoryStore, total: int, mine: int) -> None:
    for i, sid in enumerate(ids(total)):
        token, _ = store.lock(sid, 5, 5)
        store.save(sid, Record("c" * 64, "{}", user_id=owner(i, mine)), 3600, token, False)


def fill_sqlite(store: SQLiteStore, total: int, mine: int) -> None:
    now = time.time()
    rows = [
        (sid, "c" * 64, "{}", now + 3600, owner(i, mine), now, now, "bench")
        for i, sid in enumerate(ids(total))
    ]
    with closing(sqlite3.connect(store.path)) as db:
        db.executemany(
            "INSERT INTO bridge_sessions (id, client_id, data, expires, user_id, created,"
            " last_active, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.commit()


def fill_redis(store: RedisStore, total: int, mine: int) -> None:
    now = time.time()
    expires = int((now + 3600) * 1000)
    all_ids = ids(total)
    for start in range(0, total, 10_000):
        pipe = store.client.pipeline(transaction=False)
        for i in range(start, min(total, start + 10_000)):
            sid, user = all_ids[i], owner(i, mine)
            record = Record("c" * 64, "{}", user, now, now, "bench")
            pipe.set(store._keys(sid)[1], redis_module._value(record), px=3_600_000)
            pipe.zadd(store._user_key(user), {sid: expires})
            pipe.zadd(store._expiry_key(sid), {redis_module._member(sid, record): expires})
        pipe.execute()


def measure(store: object, repeat: int, expect: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        found = store.sessions_of("ada")  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
        assert len(found) == expect, len(found)
    return statistics.median(times)


def run(kind: str, total: int, mine: int, repeat: int, folder: str, redis_url: str | None) -> None:
    results = []
    for size in (mine, total):
        if kind == "memory":
            store: object = MemoryStore()
            fill = fill_memory
        elif kind == "sqlite":
            store = SQLiteStore(os.path.join(folder, f"s{size}.db"))
            fill = fill_sqlite  # type: ignore[assignment]
        else:
            store = RedisStore(redis_url, prefix=f"bench{size}:")  # type: ignore[arg-type]
            fill = fill_redis  # type: ignore[assignment]
        started = time.perf_counter()
        fill(store, size, mine)  # type: ignore[arg-type]
        filled = time.perf_counter() - started
        results.append((size, measure(store, repeat, mine), filled))
    (small, t_small, _), (large, t_large, f_large) = results
    print(
        f"{kind:7} sessions_of(ada), {mine:,} sessions: among {small:,}: {t_small * 1000:.1f} ms;"
        f" among {large:,}: {t_large * 1000:.1f} ms (ratio {t_large / t_small:.2f};"
        f" filled in {f_large:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="memory,sqlite,redis")
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--redis-total", type=int, default=200_000)
    parser.add_argument("--mine", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = None
        redis_url = None
        if "redis" in args.stores:
            from conftest import free_port
            from conftest import wait_for_port

            port = free_port()
            server = subprocess.Popen(
                ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
            wait_for_port(port)
            redis_url = f"redis://127.0.0.1:{port}/0"
        try:
            for kind in args.stores.split(","):
                total = args.redis_total if kind == "redis" else args.total
                run(kind, total, args.mine, args.repeat, folder, redis_url)
        finally:
            if server is not None:
                server.terminate()
                server.wait(10)


if __name__ == "__main__":
    main()
