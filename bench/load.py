"""Many websocket clients on real eventlet servers: the bridge on Redis
against the anchor, and two workers against one.

    python bench/load.py [--clients 1000] [--events 20] [--rounds 3] [--json PATH]

Starts its own redis-server on a free loopback port (stopped at the end),
and per run the server(s) of bench/load_server.py. Configurations: bridge
with 1 worker, the anchor (Flask-SocketIO ``manage_session=False`` plus
Flask-Session on Redis) with 1 worker, bridge with 2 workers (Redis as store
and message queue, clients split evenly). They run interleaved, their order
rotating round by round.

The clients are asyncio python-socketio clients in another process: each
logs in over HTTP, connects over websocket with the cookies it got, and once
all are connected, all send ``--events`` ``inc`` events
(``session["n"] += 1``), one after the other, each waiting for its answer.
Reported per configuration, medians of the rounds: events per second (from
the start signal to the last answer), p50 and p99 latency, server RSS per
connected socket, errors (connect failures, timeouts, error answers; all
counted, never retried), and the CPU used during the events by the client
process, by each worker and by redis-server, in % of one core (a client near
100% would be the bottleneck). A counter that comes back wrong aborts the
benchmark. The default run takes about 5 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import typing as t
from pathlib import Path

from inprocess import free_port
from inprocess import part_arguments
from inprocess import redis_process
from inprocess import start_part
from inprocess import write_figures

#: name -> (server kind, workers)
CONFIGS = {
    "bridge, 1 worker": ("bridge", 1),
    "anchor, 1 worker": ("anchor", 1),
    "bridge, 2 workers": ("bridge", 2),
}
SERVER = Path(__file__).resolve().with_name("load_server.py")


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def raise_nofile_limit() -> None:
    """A thousand sockets need more file descriptors than the usual 1,024."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    return values[min(int(len(values) * fraction), len(values) - 1)] if values else float("nan")


# -- the client process -------------------------------------------------


async def client_main(
    urls: list[str],
    pids: list[int],
    redis_pid: int,
    clients: int,
    events: int,
    profile: str | None = None,
) -> dict:
    import aiohttp
    import socketio

    connect_slots = asyncio.Semaphore(100)
    start = asyncio.Event()
    latencies: list[float] = []
    ends: list[float] = []
    errors: dict[str, int] = {}
    first_errors: list[str] = []
    wrong: list[str] = []

    def error(kind: str, detail: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1
        if len(first_errors) < 5:
            first_errors.append(f"{kind}: {detail}")

    async def total(http: aiohttp.ClientSession, path: str) -> float:
        found = 0.0
        for url in urls:
            async with http.get(f"{url}{path}") as response:
                found += float(await response.text())
        return found

    async def rss(http: aiohttp.ClientSession) -> float:
        return await total(http, "/rss")

    async def login(http: aiohttp.ClientSession, url: str) -> str | None:
        try:
            async with http.post(f"{url}/login") as response:
                response.raise_for_status()
                return "; ".join(f"{k}={v.value}" for k, v in response.cookies.items())
        except Exception as e:
            error("login", repr(e))
            return None

    async def connect(url: str, cookie: str) -> socketio.AsyncClient | None:
        client = socketio.AsyncClient(reconnection=False)
        try:
            async with connect_slots:
                await client.connect(
                    url, headers={"Cookie": cookie}, transports=["websocket"], wait_timeout=30
                )
            return client
        except Exception as e:
            error("connect", repr(e))
            return None

    async def run(client: socketio.AsyncClient) -> None:
        await start.wait()
        for i in range(1, events + 1):
            began = time.perf_counter()
            try:
                n = await client.call("inc", timeout=30)
            except socketio.exceptions.TimeoutError:
                error("timeout", f"no answer to event {i} within 30 s")
                return  # the counter may still move: this client stops
            except Exception as e:
                error("event", repr(e))
                return
            ended = time.perf_counter()
            if isinstance(n, dict) and "error" in n:
                error("error answer", repr(n))
                return
            if n != i:
                wrong.append(f"counter {n!r} after {i} increments")
                return
            latencies.append(ended - began)
            ends.append(ended)

    # The jar keeps nothing: every client sends the cookies of its own login.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        targets = [urls[i * len(urls) // clients] for i in range(clients)]  # even split
        cookies = await asyncio.gather(*(login(http, url) for url in targets))
        rss_before = await rss(http)
        connected = [
            c
            for c in await asyncio.gather(
                *(
                    connect(url, cookie)
                    for url, cookie in zip(targets, cookies)
                    if cookie is not None
                )
            )
            if c is not None
        ]
        rss_after = await rss(http)

    tasks = [asyncio.create_task(run(c)) for c in connected]
    await asyncio.sleep(0)  # every task waits at start
    cpu_client = time.process_time()
    cpu_servers = [cpu_seconds(pid) for pid in pids]
    cpu_redis = cpu_seconds(redis_pid)
    async with aiohttp.ClientSession() as http:
        gc_before = await total(http, "/gc")
    with contextlib.ExitStack() as spies:
        if profile:
            # Only while the events run: not the logins and connects.
            from spy import spy

            for i, pid in enumerate(pids):
                output = profile if len(pids) == 1 else f"{profile}.{i}"
                spies.enter_context(spy(pid, output))
        began = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        wall = (max(ends) if ends else time.perf_counter()) - began
    cpu_client = time.process_time() - cpu_client
    cpu_servers = [cpu_seconds(pid) - cpu for pid, cpu in zip(pids, cpu_servers)]
    cpu_redis = cpu_seconds(redis_pid) - cpu_redis
    async with aiohttp.ClientSession() as http:
        gc_cpu = await total(http, "/gc") - gc_before
    await asyncio.gather(*(c.disconnect() for c in connected))
    if wrong:
        sys.exit(
            f"WRONG COUNTER in {len(wrong)} clients, e.g. {wrong[0]}: the session "
            "lost increments; this benchmark's numbers would be meaningless"
        )
    latencies.sort()
    return {
        "events_per_s": len(latencies) / wall if wall > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "rss_kb_per_socket": (rss_after - rss_before) / max(len(connected), 1) / 1024,
        "connected": len(connected),
        "events": len(latencies),
        "wall_s": wall,
        "client_cpu": cpu_client / wall if wall > 0 else 0.0,
        "server_cpu": statistics.mean(cpu_servers) / wall if wall > 0 else 0.0,
        "redis_cpu": cpu_redis / wall if wall > 0 else 0.0,
        # The workers' CPU per answered event, and the cyclic GC's share of it.
        "server_us_per_event": sum(cpu_servers) * 1e6 / max(len(latencies), 1),
        "gc_share": gc_cpu / sum(cpu_servers) if sum(cpu_servers) > 0 else 0.0,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "first_errors": first_errors,
    }


# -- the parent ---------------------------------------------------------


def run_config(
    kind: str,
    workers: int,
    redis_url: str,
    redis_pid: int,
    prefix: str,
    clients: int,
    events: int,
    profile: str | None = None,
) -> dict:
    """One run of one configuration; with ``profile``, py-spy records each
    worker during the events into that file (``.0``, ``.1`` appended with
    more than one worker).
    """
    ports = [free_port() for _ in range(workers)]
    command = [sys.executable, str(SERVER), "--kind", kind, "--redis", redis_url]
    command += ["--prefix", prefix]
    if workers > 1:
        command += ["--message-queue", redis_url]
    servers = [subprocess.Popen([*command, "--port", str(port)]) for port in ports]
    try:
        for port in ports:
            wait_for_port(port)
        client = [sys.executable, __file__, "--redis-pid", str(redis_pid)]
        client += ["--client", ",".join(f"http://127.0.0.1:{port}" for port in ports)]
        client += ["--pids", ",".join(str(server.pid) for server in servers)]
        client += ["--clients", str(clients), "--events", str(events)]
        if profile:
            client += ["--profile", profile]
        # stderr goes to the terminal
        done = subprocess.run(client, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the client process failed (exit {done.returncode}), see above")
        return t.cast(dict, json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        for server in servers:
            stop(server)


@contextlib.contextmanager
def load_redis() -> t.Iterator[tuple[str, int]]:
    """The load's redis-server, taking up to 10,000 clients: (URL, pid)."""
    with redis_process("--maxclients", "10000") as found:
        yield found


def report(results: dict[str, list[dict]], clients: int, events: int) -> dict[str, t.Any]:
    """Print the tables; return the medians and ratios for ``--json``."""
    rounds = len(next(iter(results.values())))
    print(f"\n{clients} clients x {events} events each; medians of {rounds} rounds")
    header = (
        f"{'configuration':<18} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'RSS kB/socket':>13} {'errors':>7} {'cpu: client':>11} {'per worker':>10}"
        f" {'redis':>6} {'us/event':>8} {'GC':>5}"
    )
    print(header)
    print("-" * len(header))
    keys = (
        "events_per_s",
        "p50_ms",
        "p99_ms",
        "rss_kb_per_socket",
        "client_cpu",
        "server_cpu",
        "redis_cpu",
        "server_us_per_event",
        "gc_share",
    )
    medians = {}
    for name, runs in results.items():
        m = medians[name] = {key: statistics.median(r[key] for r in runs) for key in keys}
        m["errors"] = sum(r["errors"] for r in runs)
        print(
            f"{name:<18} {m['events_per_s']:>9.0f} {m['p50_ms']:>8.1f} {m['p99_ms']:>8.1f}"
            f" {m['rss_kb_per_socket']:>13.1f} {sum(r['errors'] for r in runs):>7}"
            f" {m['client_cpu']:>11.0%} {m['server_cpu']:>10.0%} {m['redis_cpu']:>6.0%}"
            f" {m['server_us_per_event']:>8.0f} {m['gc_share']:>5.0%}"
        )
    for name, runs in results.items():
        for i, r in enumerate(runs, 1):
            for detail in r["first_errors"]:
                print(f"  {name}, round {i}: {detail}")

    bridge = results["bridge, 1 worker"]
    anchor = results["anchor, 1 worker"]
    two = results["bridge, 2 workers"]

    def ratio(top: list[dict], bottom: list[dict], key: str) -> float:
        return statistics.median(
            t[key] / b[key] if b[key] else float("nan") for t, b in zip(top, bottom)
        )

    throughput = ratio(bridge, anchor, "events_per_s")
    p99 = ratio(anchor, bridge, "p99_ms")
    scaling = ratio(two, bridge, "events_per_s")
    cpu = ratio(anchor, bridge, "server_us_per_event")
    print("\nratios (median of the per-round ratios)")
    for label, value, goal, met in (
        ("bridge / anchor, throughput", throughput, "> 1", throughput > 1),
        ("anchor p99 / bridge p99", p99, "> 1", p99 > 1),
        ("anchor / bridge, CPU per event", cpu, ">= 1", cpu >= 1),
        ("two workers / one, throughput", scaling, ">= 1.6", scaling >= 1.6),
    ):
        print(f"  {label:<30} {value:5.2f}x  goal {goal:<6} {'ok' if met else 'MISSED'}")
    return {
        "clients": clients,
        "events": events,
        "rounds": rounds,
        "medians": medians,
        "ratios": {"throughput": throughput, "p99": p99, "cpu": cpu, "two_workers": scaling},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    part_arguments(parser)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # server URLs, comma-separated
    parser.add_argument("--pids", help=argparse.SUPPRESS)  # the workers' pids
    parser.add_argument("--redis-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)  # py-spy's output (spy.py)
    args = parser.parse_args()
    raise_nofile_limit()
    if args.client:
        pids = [int(pid) for pid in args.pids.split(",")]
        urls = args.client.split(",")
        result = asyncio.run(
            client_main(urls, pids, args.redis_pid, args.clients, args.events, args.profile)
        )
        print(json.dumps(result))
        return

    start_part("load", args)
    print(
        "note: the anchor gets a waiting pool of 50 connections, as the bridge does;"
        " with redis-py's default pool (at most 100, no waiting) it fails at this load"
    )
    with load_redis() as (redis_url, redis_pid):
        names = list(CONFIGS)
        results: dict[str, list[dict]] = {name: [] for name in names}
        for i in range(args.rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                kind, workers = CONFIGS[name]
                prefix = f"r{i}-{kind}{workers}:"  # every run starts from empty sessions
                began = time.monotonic()
                r = run_config(
                    kind, workers, redis_url, redis_pid, prefix, args.clients, args.events
                )
                print(
                    f"  round {i + 1}, {name}: {r['events_per_s']:.0f} events/s,"
                    f" {r['connected']}/{args.clients} connected, {r['errors']} errors,"
                    f" {time.monotonic() - began:.0f} s",
                    flush=True,
                )
                results[name].append(r)
    write_figures(args, report(results, args.clients, args.events))


if __name__ == "__main__":
    main()
