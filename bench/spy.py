"""Where the time goes, for the targets bench/run.py reports missed: py-spy
samples of the bridge and of the anchor, summed by category.

    python bench/spy.py [--sizes 0,10000] [--seconds 10] [--clients 1000]
        [--events 20] [--rate 200] [--no-load]

Cases, each for the bridge (on Redis) and the anchor (Flask-SocketIO
``manage_session=False`` plus Flask-Session on Redis):

- ``read-<size>``: the read-only event of bench/sizes.py (the same handler
  and test client) on a session of that size, sent for ``--seconds`` in this
  process, recorded once the session is set up;
- ``load``: one eventlet worker of bench/load.py under ``--clients``
  websocket clients sending ``--events`` events each, recorded while the
  events run (not the logins and connects).

py-spy samples without pausing the process (``--nonblocking``), so its
check for idle threads (a sleep, a wait in epoll or recv) holds and leaves
them out. A sample counts a thread that runs or is runnable: on 2 cores,
time spent waiting for the CPU while redis-server runs lands on the socket
call (redis-py's ``sendall``). Each sample goes to one category: the
innermost frame whose file belongs to a known package (stdlib frames count
for the package that called them). "incl." is the share of samples with a
frame of that category anywhere on the stack; us/event spreads the CPU per
event (measured without the profiler for the read cases, with it for the
load) by the self shares. The cyclic GC's share comes from ``gc.callbacks``
(its samples are inside the other rows): py-spy shows the collector only
with ``--native``, which pauses the process at every sample (the read event
ran 2 to 10 times slower under it here) and cannot unwind eventlet's
greenlets. ``--native`` (read cases only) records the C frames too; the
collector then has its own row, and waits in C (poll, sleeps) are dropped
here, py-spy's idle check not holding in that mode.

Writes ``bench/profiles/<case>-<side>.collapsed`` (py-spy's raw collapsed
stacks, kept out of git) and ``bench/profiles/<case>.txt``, the table
printed. The process needs ptrace rights over its children (root, or
``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

PROFILES = Path(__file__).resolve().with_name("profiles")

#: Category -> file name prefixes (as py-spy prints them: relative to the
#: sys.path entry) of the packages whose frames count for it, checked in
#: this order. Serialization comes first: some of it lives inside Flask
#: (tagged JSON) and inside the bridge.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "serialization (json, msgspec, tagged)": (
        "json/",
        "_json",
        "msgspec/",
        "flask/json/",
        "flask_session_bridge/serialization.py",
    ),
    "redis-py": ("redis/", "hiredis/"),
    "eventlet hub / green I/O": ("eventlet/", "greenlet/", "dns/"),
    "Flask + Werkzeug contexts": ("flask/", "werkzeug/", "itsdangerous/", "blinker/"),
    "python-socketio / engineio": (
        "flask_socketio/",
        "socketio/",
        "engineio/",
        "simple_websocket/",
        "wsproto/",
    ),
    "session layer: bridge / Flask-Session": ("flask_session_bridge/", "flask_session/"),
}
GC = "GC (cyclic collector)"
OTHER = "other (stdlib, bench code, interpreter)"
ORDER = (*CATEGORIES, GC, OTHER)
#: Innermost native frames of a socket send: the kernel's work, in whatever
#: row called it (redis-py's commands, eventlet's websocket frames).
SENDING = frozenset(("send", "sendto", "sendmsg", "write", "writev", "__send"))
#: Flask-Session's msgspec serializer lives in its own package's files.
SERIALIZER_FUNCTION = re.compile(r"Serializer\.(encode|decode)$")
GC_FUNCTIONS = ("gc_collect", "collect_with_callback", "collect_generations", "_PyGC_Collect")
#: Innermost native frames of a thread that waits (for a socket, a timer, a
#: lock). py-spy's own idle check does not hold with --native (the process is
#: paused when it looks), so these samples are dropped here. ``send`` stays:
#: on loopback it is the kernel's CPU work, counted as the process's.
WAITING = frozenset(
    (
        "poll",
        "ppoll",
        "epoll_wait",
        "select",
        "pselect",
        "clock_nanosleep",
        "nanosleep",
        "pthread_cond_wait",
        "pthread_cond_timedwait",
        "sem_wait",
        "sem_timedwait",
        "sem_clockwait",
        "do_futex_wait",
        "__futex_abstimed_wait_common",
        "accept",
        "accept4",
        "recv",
        "recvfrom",
        "read",
    )
)
#: Innermost Python frames of a thread blocked on a lock: py-spy's idle
#: check misses them in --nonblocking mode (the bridge's release sender waits
#: there between releases).
WAITING_PYTHON = re.compile(r"^(Condition\.wait|Event\.wait|Thread\.join) \(threading\.py:")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")
#: A Python frame's file; a native frame names a library or a C file.
PYTHON_FILE = re.compile(r"\.py:\d+$|^<")


@contextlib.contextmanager
def spy(pid: int, output: str | Path, rate: int = 200, native: bool = False) -> t.Iterator[None]:
    """py-spy records process ``pid`` into ``output`` (collapsed stacks)
    from when it says it samples until the block ends; ``native`` adds the C
    frames (py-spy cannot unwind them through eventlet's greenlets).
    """
    binary = shutil.which("py-spy")
    if binary is None:
        sys.exit("py-spy is not installed (pip install py-spy)")
    command = [binary, "record", "--pid", str(pid), "--format", "raw"]
    command += ["--rate", str(rate), "--output", str(output)]
    command += ["--native"] if native else ["--nonblocking"]
    # It says "Sampling process ..." on stdout once attached.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    said = process.stdout.readline()
    if "Sampling" not in said:
        process.kill()
        sys.exit(f"py-spy did not start: {said.strip()} {process.stdout.read().strip()}")
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # it writes the file on Ctrl-C
        rest, _ = process.communicate(timeout=60)
        if process.returncode != 0 or not Path(output).exists():
            sys.exit(f"py-spy failed (exit {process.returncode}): {rest.strip()}")


def frame_category(frame: str) -> str | None:
    """The category a frame's file belongs to; None if it is not a known
    package's (stdlib, interpreter, bench code).
    """
    match = FRAME.match(frame)
    if match is None:
        return None
    function, file = match["function"], match["file"]
    if function.startswith(GC_FUNCTIONS):
        return GC
    if SERIALIZER_FUNCTION.search(function) and file.startswith("flask_session/"):
        return next(iter(CATEGORIES))
    for category, prefixes in CATEGORIES.items():
        if file.startswith(prefixes):
            return category
    return None


class Summary:
    """Self and inclusive samples per category, from collapsed stacks."""

    def __init__(self, path: Path, native: bool = False) -> None:
        #: Whether py-spy recorded C frames, the collector's among them.
        self.native = native
        self.self: collections.Counter[str] = collections.Counter()
        self.inclusive: collections.Counter[str] = collections.Counter()
        #: Samples inside redis-py called from the session layer.
        self.redis_by_session = 0
        self.total = 0
        #: Samples dropped as waiting (see WAITING).
        self.idle = 0
        #: Samples in a send system call (see SENDING).
        self.sending = 0
        session_layer = list(CATEGORIES)[-1]
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            frames = stack.split(";")  # outermost first, as py-spy writes them
            innermost = FRAME.match(frames[-1])
            if WAITING_PYTHON.match(frames[-1]):
                self.idle += samples
                continue
            if innermost is not None and not PYTHON_FILE.search(innermost["file"]):
                if innermost["function"] in WAITING:
                    self.idle += samples
                    continue
                self.sending += samples if innermost["function"] in SENDING else 0
            found = [frame_category(f) for f in frames]
            self.total += samples
            if GC in found:
                self.self[GC] += samples
            else:
                known = [c for c in found if c is not None]
                self.self[known[-1] if known else OTHER] += samples
            for category in set(found) - {None}:
                self.inclusive[t.cast(str, category)] += samples
            if session_layer in found and "redis-py" in found[found.index(session_layer) :]:
                self.redis_by_session += samples

    def share(self, counter: collections.Counter[str], category: str) -> float:
        return counter[category] / self.total if self.total else 0.0


def table(case: str, sides: dict[str, tuple[Summary, float, float]]) -> str:
    """Both sides of one case, side by side: ``sides`` maps a side to its
    summary, CPU us per event and GC share by gc.callbacks.
    """
    names = list(sides)
    lines = [case, "self: % of samples; us/event: CPU per event x self share; incl.: % inclusive"]
    head = f"{'category':<40}"
    for name in names:
        head += f" {name + ' self':>12} {'us/event':>8} {'incl.':>6}"
    lines += [head, "-" * len(head)]
    for category in ORDER:
        row = f"{category:<40}"
        for summary, us, gc_share in sides.values():
            share = summary.share(summary.self, category)
            incl = summary.share(summary.inclusive, category) if category != OTHER else share
            if category == GC and not summary.native:
                share = incl = gc_share
                row += f" {'*' + format(share, '.1%'):>12} {share * us:>8.0f} {'':>6}"
                continue
            row += f" {share:>12.1%} {share * us:>8.0f} {incl:>6.1%}"
        lines.append(row)
    row = f"{'all: samples; CPU us per event':<40}"
    for summary, us, _ in sides.values():
        row += f" {summary.total:>12} {us:>8.0f} {'':>6}"
    lines.append(row)
    if any(summary.native for summary, _, _ in sides.values()):
        row = f"{'(samples dropped as waiting in C)':<40}"
        for summary, _, _ in sides.values():
            row += f" {summary.idle:>12} {'':>8} {'':>6}"
        lines.append(row)
        row = f"{'in a send system call, within the rows':<40}"
        for summary, us, _ in sides.values():
            share = summary.sending / summary.total if summary.total else 0.0
            row += f" {share:>12.1%} {share * us:>8.0f} {'':>6}"
        lines.append(row)
    row = f"{'redis-py called by the session layer':<40}"
    for summary, us, _ in sides.values():
        share = summary.redis_by_session / summary.total if summary.total else 0.0
        row += f" {'':>12} {share * us:>8.0f} {share:>6.1%}"
    lines.append(row)
    lines.append(
        "GC share of CPU by gc.callbacks: "
        + ", ".join(f"{name} {gc_share:.1%}" for name, (_, _, gc_share) in sides.items())
    )
    if not all(summary.native for summary, _, _ in sides.values()):
        lines.append(
            "* by gc.callbacks (without --native py-spy does not see the collector):"
            " its samples are in the rows above"
        )
    return "\n".join(lines)


class GCTimer:
    """CPU seconds the cyclic collector ran, by ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.process_time()
        else:
            self.seconds += time.process_time() - self._began

    def __enter__(self) -> GCTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def send_reads(client: t.Any, seconds: float) -> tuple[float, float]:
    """(CPU us per event, GC share of it) of read events sent for ``seconds``."""
    events = 0
    with GCTimer() as collector:
        cpu, deadline = time.process_time(), time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.read()
            events += 1
        cpu = time.process_time() - cpu
    return cpu * 1e6 / events, collector.seconds / cpu


def read_case(url: str, size: int, seconds: float, rate: int, native: bool) -> str:
    """The read event of bench/sizes.py at one session size, both sides."""
    from sizes import anchor_app
    from sizes import bridge_app
    from sizes import Client

    from flask_session_bridge import RedisStore

    case = f"read-{size}"
    apps = {
        "bridge": bridge_app(RedisStore(url, prefix=f"profile-{size}:")),
        "anchor": anchor_app(url, f"profile-anchor-{size}:"),
    }
    sides = {}
    for side, app in apps.items():
        client = Client(app, size)
        for _ in range(50):  # first-call paths, caches
            client.read()

        us, gc_share = send_reads(client, seconds)  # without the profiler
        output = PROFILES / f"{case}-{side}.collapsed"
        with spy(os.getpid(), output, rate, native):
            send_reads(client, seconds)
        sides[side] = (Summary(output, native), us, gc_share)
    mode = "native, blocking" if native else "nonblocking"
    title = f"{case}: read event, {size} B session, {seconds:g} s per side, {rate} Hz, {mode}"
    return table(title, sides)


def load_case(clients: int, events: int) -> str:
    """One eventlet worker of bench/load.py under load, both sides."""
    import load

    sides = {}
    with load.load_redis() as (url, pid):
        for side in ("bridge", "anchor"):
            output = PROFILES / f"load-{side}.collapsed"
            r = load.run_config(side, 1, url, pid, f"profile-{side}:", clients, events, str(output))
            print(
                f"  load, {side}: {r['events_per_s']:.0f} events/s under the profiler,"
                f" {r['connected']}/{clients} connected, {r['errors']} errors",
                flush=True,
            )
            sides[side] = (Summary(output), r["server_us_per_event"], r["gc_share"])
    title = f"load: {clients} clients x {events} events, one eventlet worker, 200 Hz, nonblocking"
    return table(title, sides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,10000", help="session sizes of the read cases")
    parser.add_argument("--seconds", type=float, default=10.0, help="per read case and side")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument(
        "--rate", type=int, default=200, help="py-spy samples per second, read cases (load: 200)"
    )
    parser.add_argument("--no-load", action="store_true", help="only the read cases")
    parser.add_argument(
        "--native", action="store_true", help="read cases: C frames too (GC, waits in C)"
    )
    parser.add_argument(
        "--no-versions", action="store_true", help="do not print the versions (run.py did)"
    )
    args = parser.parse_args()
    from inprocess import redis_server
    from inprocess import start_part

    start_part("profile", args)
    PROFILES.mkdir(exist_ok=True)
    tables = {}
    with redis_server() as url:
        for size in (int(s) for s in args.sizes.split(",")):
            tables[f"read-{size}"] = read_case(url, size, args.seconds, args.rate, args.native)
    if not args.no_load:
        tables["load"] = load_case(args.clients, args.events)
    for name, text in tables.items():
        print()
        print(text)
        (PROFILES / f"{name}.txt").write_text(text + "\n")
    print(f"\ncollapsed stacks and these tables: {PROFILES}")


if __name__ == "__main__":
    main()
