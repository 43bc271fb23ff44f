"""Time to remove N expired sessions among 10·N, for growing N, per store.

    python bench/cleanup.py [--sizes 1000,10000,100000] [--totals 10000,100000,1000000]

Sessions are written straight into each store's dict, table or keys (the
point is the removal, not the writes). The cost should follow N, the
expired count, not 10·N.

RedisStore has nothing to clean: its keys carry native TTLs, so an expired
session is gone at its next read, and Redis reclaims the memory in the
background (slowly when few keys are expired: at 10% expired, 1,000 expired
keys among 10,000 took 34 s to be dropped here, with no effect on reads).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time

from inprocess import part_arguments
from inprocess import write_figures

from flask_session_bridge import MemoryStore
from flask_session_bridge import SQLiteStore
from flask_session_bridge.stores.base import Record


def memory_cleanup(expired: int, total: int) -> float:
    store = MemoryStore(clock=time.time)  # the clock its expiry times are read on
    now = time.time()
    for i in range(total):
        store._put(f"{i:064x}", Record(f"{i:064x}", "{}"), now - 1 if i < expired else now + 3600)
    start = time.perf_counter()
    removed = store.cleanup()
    elapsed = time.perf_counter() - start
    assert len(removed) == expired, len(removed)
    return elapsed


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="expired N among 10 N")
    parser.add_argument(
        "--totals", default="10000,100000,1000000", help="1,000 expired among each total"
    )
    part_arguments(parser)
    args = parser.parse_args()
    print(f"cleanup: sqlite {sqlite3.sqlite_version}")
    print(f"{'expired N':>10} {'total':>10} {'memory s':>9} {'sqlite s':>9}")
    # The same N among ever more live sessions after N among 10 N.
    runs = [(int(n), 10 * int(n)) for n in args.sizes.split(",")]
    runs += [(1000, int(total)) for total in args.totals.split(",")]
    figures = []
    for n, total in runs:
        memory_s, sqlite_s = memory_cleanup(n, total), sqlite_cleanup(n, total)
        figures.append({"expired": n, "total": total, "memory_s": memory_s, "sqlite_s": sqlite_s})
        print(f"{n:>10} {total:>10} {memory_s:>9.3f} {sqlite_s:>9.3f}")
    write_figures(args, {"runs": figures})


if __name__ == "__main__":
    main()
