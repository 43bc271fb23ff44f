"""Many websocket clients on real eventlet servers: the bridge on Redis
against the anchor, and two workers against one.

    python bench/load.py [--clients 1000] [--events 20] [--rounds 3]

Starts its own redis-server on a free loopback port, and per run the
server(s) of bench/load_server.py. The clients are asyncio python-socketio
clients in another process: each logs in over HTTP, connects over websocket
with the cookies it got, and once all are connected, all send ``--events``
``inc`` events (``session["n"] += 1``), one after the other, waiting for each
answer. Reported per configuration (medians of the rounds): events per
second, p50 and p99 latency, server RSS per connected socket, and errors.
Configurations run interleaved, their order rotating round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version
from pathlib import Path

DISTRIBUTIONS = (
    "flask", "flask-socketio", "python-socketio", "python-engineio", "eventlet",
    "redis", "flask-session", "flask-session-bridge",
)
#: name -> (server kind, workers)
CONFIGS = {
    "bridge, 1 worker": ("bridge", 1),
    "anchor, 1 worker": ("anchor", 1),
    "bridge, 2 workers": ("bridge", 2),
}
SERVER = Path(__file__).resolve().with_name("load_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# -- the client process -------------------------------------------------


async def client_main(urls: list[str], clients: int, events: int) -> dict[str, float]:
    import aiohttp
    import socketio

    connect_slots = asyncio.Semaphore(50)
    start = asyncio.Event()
    latencies: list[float] = []
    errors: list[str] = []

    async def rss() -> int:
        async with aiohttp.ClientSession() as http:
            sizes = [int(await (await http.get(f"{url}/rss")).text()) for url in urls]
        return sum(sizes)

    async def login(http: aiohttp.ClientSession, url: str) -> str:
        async with http.post(f"{url}/login") as response:
            response.raise_for_status()
            return "; ".join(f"{k}={v.value}" for k, v in response.cookies.items())

    async def connect(url: str, cookie: str) -> socketio.AsyncClient:
        client = socketio.AsyncClient(reconnection=False)
        async with connect_slots:
            await client.connect(url, headers={"Cookie": cookie}, transports=["websocket"])
        return client

    async def run(client: socketio.AsyncClient) -> None:
        await start.wait()
        for i in range(1, events + 1):
            began = time.perf_counter()
            n = await client.call("inc", timeout=60)
            latencies.append(time.perf_counter() - began)
            if n != i:
                errors.append(f"counter {n!r} after {i} increments")
                return

    jar = aiohttp.DummyCookieJar()  # every client keeps its own cookies
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        cookies = await asyncio.gather(*(login(http, urls[i % len(urls)]) for i in range(clients)))
    before = await rss()
    results = await asyncio.gather(
        *(connect(urls[i % len(urls)], cookies[i]) for i in range(clients)),
        return_exceptions=True,
    )
    connected = [c for c in results if isinstance(c, socketio.AsyncClient)]
    errors += [f"connect: {e!r}" for e in results if isinstance(e, BaseException)]
    after = await rss()
    tasks = [asyncio.create_task(run(c)) for c in connected]
    cpu_before = time.process_time()
    began = time.perf_counter()
    start.set()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            errors.append(f"event: {outcome!r}")
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_before
    await asyncio.gather(*(c.disconnect() for c in connected))
    latencies.sort()
    return {
        "events_per_s": len(latencies) / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else float("nan"),
        "rss_kb_per_socket": (after - before) / max(len(connected), 1) / 1024,
        "client_cpu": cpu / wall,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


# -- the parent ---------------------------------------------------------


def run_config(kind: str, workers: int, redis_url: str, clients: int, events: int) -> dict:
    ports = [free_port() for _ in range(workers)]
    command = [sys.executable, str(SERVER), "--kind", kind, "--redis", redis_url]
    if workers > 1:
        command += ["--message-queue", redis_url]
    servers = [subprocess.Popen([*command, "--port", str(port)]) for port in ports]
    try:
        for port in ports:
            wait_for_port(port)
        urls = ",".join(f"http://127.0.0.1:{port}" for port in ports)
        output = subprocess.run(
            [sys.executable, __file__, "--client", urls,
             "--clients", str(clients), "--events", str(events)],
            check=True, capture_output=True, text=True,
        ).stdout
        return json.loads(output.strip().splitlines()[-1])
    finally:
        for server in servers:
            stop(server)


def versions() -> str:
    found = [f"python {platform.python_version()}"]
    for name in DISTRIBUTIONS:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def report(results: dict[str, list[dict]], clients: int, events: int) -> None:
    rounds = len(next(iter(results.values())))
    print(f"{clients} clients x {events} events, {rounds} rounds; medians")
    print(f"{'configuration':<20} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'kB/socket':>10} {'client cpu':>10} {'errors':>7}")
    medians: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        medians[name] = {
            key: statistics.median(r[key] for r in runs)
            for key in ("events_per_s", "p50_ms", "p99_ms", "rss_kb_per_socket", "client_cpu")
        }
        m = medians[name]
        print(f"{name:<20} {m['events_per_s']:>9.0f} {m['p50_ms']:>8.1f} {m['p99_ms']:>8.1f}"
              f" {m['rss_kb_per_socket']:>10.1f} {m['client_cpu']:>9.0%}"
              f" {sum(r['errors'] for r in runs):>7}")
        for r in runs:
            if r["errors"]:
                print(f"    first error: {r['first_error']}")
    bridge, anchor = medians["bridge, 1 worker"], medians["anchor, 1 worker"]
    two = medians["bridge, 2 workers"]
    for label, value, goal in (
        ("bridge / anchor throughput", bridge["events_per_s"] / anchor["events_per_s"], 1.0),
        ("anchor p99 / bridge p99", anchor["p99_ms"] / bridge["p99_ms"], 1.0),
        ("two workers / one, throughput", two["events_per_s"] / bridge["events_per_s"], 1.6),
    ):
        verdict = "ok" if value >= goal else "MISSED"
        print(f"{label:<32} {value:5.2f}x  goal >= {goal:g}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # server URLs, comma-separated
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.client:
        result = asyncio.run(client_main(args.client.split(","), args.clients, args.events))
        print(json.dumps(result))
        return

    print("load:", versions())
    port = free_port()
    redis_server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--maxclients", "10000"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        redis_url = f"redis://127.0.0.1:{port}/0"
        names = list(CONFIGS)
        results: dict[str, list[dict]] = {name: [] for name in names}
        for i in range(args.rounds):
            for name in names[i % len(names):] + names[: i % len(names)]:
                kind, workers = CONFIGS[name]
                result = run_config(kind, workers, redis_url, args.clients, args.events)
                print(f"  round {i + 1}: {name}: {result['events_per_s']:.0f} events/s,"
                      f" {result['errors']} errors", flush=True)
                results[name].append(result)
        report(results, args.clients, args.events)
    finally:
        stop(redis_server)


if __name__ == "__main__":
    main()
