"""1,000 websocket clients on one eventlet worker over an SQLiteStore, with
the worker's file limit at 1,024 (``ulimit -n 1024``).

    python bench/sqlite_sockets.py [--browsers 100] [--sockets 10] [--events 10]
        [--cycles 10000] [--nofile 1024]

Serves tests/server_app.py (eventlet, ``sqlite:///`` in a temporary folder).
``--browsers`` users log in over HTTP; each opens ``--sockets`` websockets
with its cookies, so 10 sockets share each session; once all are connected,
every socket sends ``--events`` ``inc`` events (``session["n"] += 1``), one
after the other. Then ``--cycles`` sockets connect, send one event and
disconnect, 500 at a time. Prints the events answered with the right count,
each session's final count against the acknowledged increments, and the
worker's open file descriptors: before, with every socket connected, after
the events, and after the cycles. Exits non-zero if an event failed or an
increment was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import socketio

SERVER = Path(__file__).resolve().parent.parent / "tests" / "server_app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def main(args: argparse.Namespace, url: str, pid: int) -> int:
    connect_slots = asyncio.Semaphore(200)
    errors: list[str] = []

    async def connect(cookie: str) -> socketio.AsyncClient | None:
        client = socketio.AsyncClient(reconnection=False)
        try:
            async with connect_slots:
                await client.connect(
                    url, headers={"Cookie": cookie}, transports=["websocket"], wait_timeout=60
                )
            return client
        except Exception as e:  # counted, never retried
            errors.append(f"connect: {e!r}")
            return None

    async def send(client: socketio.AsyncClient, events: int) -> int:
        acknowledged = 0
        for _ in range(events):
            try:
                answer = await client.call("inc", timeout=120)
            except Exception as e:  # counted, never retried
                errors.append(f"event: {e!r}")
                break
            if not isinstance(answer, int):
                errors.append(f"answer: {answer!r}")
                break
            acknowledged += 1
        return acknowledged

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        cookies = []
        for i in range(args.browsers):
            async with http.post(f"{url}/login/user{i}") as response:
                response.raise_for_status()
                cookies.append("; ".join(f"{k}={v.value}" for k, v in response.cookies.items()))
        before = open_files(pid)
        clients = await asyncio.gather(
            *(connect(cookie) for cookie in cookies for _ in range(args.sockets))
        )
        connected = open_files(pid)
        started = time.monotonic()
        acks = await asyncio.gather(
            *(send(client, args.events) for client in clients if client is not None)
        )
        took = time.monotonic() - started
        await asyncio.gather(*(c.disconnect() for c in clients if c is not None))
        lost = 0
        for cookie in cookies:
            async with http.get(f"{url}/me", headers={"Cookie": cookie}) as response:
                n = (await response.json())["n"] or 0
            lost += args.sockets * args.events - n
        acknowledged = sum(acks)
        # Failed events left their increments out: count only what was lost
        # among the acknowledged ones.
        lost -= args.browsers * args.sockets * args.events - acknowledged
        await asyncio.sleep(1)
        after_events = open_files(pid)

        async def cycle(cookie: str) -> None:
            client = await connect(cookie)
            if client is not None:
                await send(client, 1)
                await client.disconnect()

        cycles_started = time.monotonic()
        for first in range(0, args.cycles, 500):
            await asyncio.gather(
                *(
                    cycle(cookies[i % len(cookies)])
                    for i in range(first, min(first + 500, args.cycles))
                )
            )
        cycles_took = time.monotonic() - cycles_started
        await asyncio.sleep(1)
        after_cycles = open_files(pid)

    total = args.browsers * args.sockets * args.events
    print(
        f"sockets connected: {sum(c is not None for c in clients)} of"
        f" {args.browsers * args.sockets} (worker file limit {args.nofile})"
    )
    print(
        f"events acknowledged: {acknowledged} of {total} in {took:.1f}s;"
        f" acknowledged increments lost: {lost}"
    )
    print(f"socket cycles: {args.cycles} in {cycles_took:.1f}s")
    print(
        f"worker fds: before {before}, all connected {connected},"
        f" after the events {after_events}, after the cycles {after_cycles}"
    )
    for error in errors[:5]:
        print("  e.g.", error)
    print(f"errors: {len(errors)}")
    return 0 if acknowledged == total and lost == 0 and not errors else 1


def run() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--browsers", type=int, default=100)
    parser.add_argument("--sockets", type=int, default=10)
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--nofile", type=int, default=1024)
    args = parser.parse_args()

    # This process holds every client socket: it needs more than 1,024 files.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def limit_worker() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))

    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        store = f"sqlite:///{folder}/sessions.db"
        server = subprocess.Popen(
            [
                sys.executable,
                str(SERVER),
                "--mode",
                "eventlet",
                "--port",
                str(port),
                "--store",
                store,
            ],
            preexec_fn=limit_worker,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            return asyncio.run(main(args, f"http://127.0.0.1:{port}", server.pid))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    sys.exit(run())
