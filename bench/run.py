"""The whole benchmark suite, one part after the other:

    pip install -e '.[bench]'
    python bench/run.py

1. bench/inprocess.py: a socket event and an HTTP view per store, against a
   bare event, Flask's cookie session and the anchor (Flask-SocketIO
   ``manage_session=False`` + Flask-Session on Redis);
2. bench/sizes.py: socket events at 0 B, 1 KB, 10 KB and 100 KB sessions,
   reads and writes, and 1/4/16 sockets of one session, bridge on Redis
   against the anchor (CPU per event and wall time, interleaved rounds);
3. bench/alloc.py: GC-tracked objects and memory blocks per event;
4. bench/load.py: 1,000 websocket clients on a real eventlet server, bridge
   against the anchor (throughput, CPU per event, GC share, kB per socket),
   and two workers against one;
5. bench/cleanup.py: removing N expired sessions among 10·N.

Each part starts its own redis-server and prints the versions it ran; run
a part alone for its options (``--help``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PARTS = ("inprocess.py", "sizes.py", "alloc.py", "load.py", "cleanup.py")


def main() -> None:
    here = Path(__file__).resolve().parent
    failed = []
    for part in PARTS:
        print(f"\n=== bench/{part}", flush=True)
        if subprocess.run([sys.executable, str(here / part)]).returncode != 0:
            failed.append(part)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
