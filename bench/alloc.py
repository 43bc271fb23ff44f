"""Objects per socket event: what an event leaves for the cyclic GC, and
what it allocates in all, bridge against the anchor:

    python bench/alloc.py [--events 2000] [--size 0]

For each configuration, with the collector off: the growth of the youngest
generation's count per event (GC-tracked objects allocated and not yet
freed: what triggers young collections), the memory blocks allocated per
event (tracemalloc), and CPU microseconds per event (tracemalloc off). Runs
in this process with Flask-SocketIO's test client, against a redis-server
started here. To compare two trees, run it with each on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
import typing as t

from inprocess import part_arguments
from inprocess import redis_server
from inprocess import start_part
from inprocess import write_figures
from sizes import anchor_app
from sizes import bridge_app
from sizes import Client

from flask_session_bridge import MemoryStore
from flask_session_bridge import RedisStore


def per_event(op: t.Callable[[], None], events: int) -> tuple[float, float, float]:
    """(young GC count, allocated blocks, CPU us) per event."""
    for _ in range(50):
        op()
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(events):
            op()
        young = (gc.get_count()[0] - before) / events
    finally:
        gc.enable()
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        snapshot = tracemalloc.take_snapshot()
        for _ in range(events // 4):
            op()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    blocks = sum(s.count_diff for s in after.compare_to(snapshot, "filename") if s.count_diff > 0)
    # Blocks still alive after the events (leaks and caches) are counted
    # as the allocation count: tracemalloc sees the net, so also time it.
    cpu = time.process_time()
    for _ in range(events):
        op()
    cpu_us = (time.process_time() - cpu) * 1e6 / events
    return young, blocks / (events // 4), cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--size", type=int, default=0)
    part_arguments(parser)
    args = parser.parse_args()
    start_part("alloc", args)
    figures = {}
    with redis_server() as url:
        memory = Client(bridge_app(MemoryStore()), args.size)
        bridge = Client(bridge_app(RedisStore(url, prefix="alloc:")), args.size)
        anchor = Client(anchor_app(url, "alloc-anchor:"), args.size)
        print(f"session of {args.size} B; per event, collector off for the count")
        print(f"{'configuration':<16} {'young GC objs':>13} {'net blocks':>10} {'CPU us':>8}")
        for name, op in (
            ("bare event", memory.bare),
            ("memory write", memory.inc),
            ("memory read", memory.read),
            ("bridge write", bridge.inc),
            ("anchor write", anchor.inc),
            ("bridge read", bridge.read),
            ("anchor read", anchor.read),
        ):
            young, blocks, cpu = per_event(op, args.events)
            figures[name] = {"young_gc_objects": young, "net_blocks": blocks, "cpu_us": cpu}
            print(f"{name:<16} {young:13.1f} {blocks:10.1f} {cpu:8.0f}")
    write_figures(args, {"size": args.size, "per_event": figures})


if __name__ == "__main__":
    main()
