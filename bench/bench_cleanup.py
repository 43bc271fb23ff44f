"""Time to remove N expired sessions among 10·N, per store.

    python bench/bench_cleanup.py [--sizes 1000,10000,100000] [--redis-url URL]

Rows are written straight into each store's tables or keys (the point is the
cleanup, not the writes). The cost should follow the expired count N.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time

from flask_session_bridge import MemoryStore
from flask_session_bridge import SQLiteStore
from flask_session_bridge.stores.base import Record


def sqlite_cleanup(expired: int, total: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(os.path.join(folder, "s.db"))
        now = time.time()
        db = sqlite3.connect(store.path)
        db.executemany(
            "INSERT INTO bridge_sessions (id, client_id, data, expires) VALUES (?, ?, ?, ?)",
            (
                (f"{i:064x}", f"{i:064x}", '{"user":"u"}', now - 1 if i < expired else now + 3600)
                for i in range(total)
            ),
        )
        db.commit()
        db.close()
        start = time.perf_counter()
        removed = store.cleanup()
        elapsed = time.perf_counter() - start
        assert len(removed) == expired, len(removed)
        return elapsed


def memory_cleanup(expired: int, total: int) -> float:
    store = MemoryStore()
    now = time.monotonic()
    for i in range(total):
        store._sessions[f"{i:064x}"] = (
            Record(f"{i:064x}", "{}"),
            now - 1 if i < expired else now + 3600,
        )
    start = time.perf_counter()
    removed = store.cleanup()
    elapsed = time.perf_counter() - start
    assert len(removed) == expired
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    print(f"sqlite {sqlite3.sqlite_version}")
    print(f"{'expired N':>10} {'total 10N':>10} {'sqlite s':>9} {'memory s':>9}")
    for n in (int(x) for x in args.sizes.split(",")):
        sqlite_s, memory_s = sqlite_cleanup(n, 10 * n), memory_cleanup(n, 10 * n)
        print(f"{n:>10} {10 * n:>10} {sqlite_s:>9.3f} {memory_s:>9.3f}")
    print("Redis expires keys itself (native TTL): its cleanup() removes nothing.")


if __name__ == "__main__":
    main()
