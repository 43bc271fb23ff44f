"""CPU and wall time per lock when many threads of one process hammer one
session: each thread locks, reads a counter, works ``--hold`` ms, writes it
back plus one, as the bridge does for an event.

    python bench/locks.py [--store memory|sqlite] [--threads 16] [--each 200] [--hold 1]

Prints the acknowledged and stored counts (they must match), the wall time,
and the process CPU time per lock (all threads, in ms).
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import threading
import time

from flask_session_bridge import MemoryStore
from flask_session_bridge.stores.base import Record
from flask_session_bridge.stores.sqlite import SQLiteStore

parser = argparse.ArgumentParser()
parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
parser.add_argument("--threads", type=int, default=16)
parser.add_argument("--each", type=int, default=200)
parser.add_argument("--hold", type=float, default=1.0, help="ms of work while holding the lock")
args = parser.parse_args()

folder = tempfile.mkdtemp()
store = MemoryStore() if args.store == "memory" else SQLiteStore(os.path.join(folder, "s.db"))
session_id, client_id = secrets.token_hex(32), secrets.token_hex(32)
token, _ = store.lock(session_id, 5.0, 5.0)
store.save(session_id, Record(client_id, "0"), 600.0, token, True)
acknowledged = [0] * args.threads
start = threading.Barrier(args.threads + 1)


def work(n: int) -> None:
    start.wait()
    for _ in range(args.each):
        token, record = store.lock(session_id, 5.0, 60.0)
        assert record is not None
        time.sleep(args.hold / 1000)  # the handler's work, other threads run
        store.save(session_id, Record(client_id, str(int(record.data) + 1)), 600.0, token, False)
        acknowledged[n] += 1


threads = [threading.Thread(target=work, args=(n,)) for n in range(args.threads)]
for thread in threads:
    thread.start()
start.wait()
wall, cpu = time.monotonic(), time.process_time()
for thread in threads:
    thread.join()
wall, cpu = time.monotonic() - wall, time.process_time() - cpu
record = store.get(session_id)
assert record is not None
locks = sum(acknowledged)
print(
    f"{args.store}: {args.threads} threads, acknowledged {locks}, stored {record.data},"
    f" wall {wall:.2f}s, CPU {1000 * cpu / locks:.3f} ms/lock, {locks / wall:.0f} locks/s"
)
