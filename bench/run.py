"""The whole benchmark suite, one part after the other, ending with one
table of issue 13's targets:

    pip install -e '.[bench]'
    python bench/run.py [--quick] [--profile] [--parts sizes,load]

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
5. bench/cleanup.py: removing N expired sessions among 10·N;
6. with ``--profile``, bench/spy.py: where the time goes (py-spy) in the
   read event and in one worker under load, bridge and anchor.

Each part starts its own redis-server, writes its key figures to a JSON
file given by ``--json`` and runs alone too (``--help`` for its options).
The versions are printed once, at the top. ``--quick`` runs every part with
small settings (a smoke test: minutes, not the ~15 of a full run; its
ratios are noisy). The exit status is 1 if a part failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

from inprocess import versions

HERE = Path(__file__).resolve().parent
#: Part -> its options under ``--quick``.
PARTS = {
    "inprocess": ["--rounds", "1", "--ops", "200"],
    "sizes": ["--rounds", "1", "--events", "96"],
    "alloc": ["--events", "300"],
    "load": ["--clients", "100", "--events", "5", "--rounds", "1"],
    "cleanup": ["--sizes", "1000", "--totals", "10000"],
}
PROFILE_QUICK = ["--seconds", "2", "--clients", "100", "--events", "10"]
SIZES = {0: "0 B", 1000: "1 KB", 10000: "10 KB", 100000: "100 KB"}

Figures = dict[str, t.Any]
#: (what, target, measured text, verdict)
Row = tuple[str, str, str, str]


def run_part(name: str, options: list[str], folder: str) -> Figures | None:
    """Run one part; its figures, or None if it failed."""
    print(f"\n=== bench/{name}.py {' '.join(options)}", flush=True)
    output = Path(folder, f"{name}.json")
    command = [sys.executable, str(HERE / f"{name}.py"), *options]
    done = subprocess.run([*command, "--json", str(output), "--no-versions"])
    if done.returncode != 0 or not output.exists():
        return None
    return t.cast(Figures, json.loads(output.read_text()))


def verdict(value: float, target: str) -> str:
    """``met`` or ``MISSED`` for a target written ">= 1.0" or "<= 1.25"."""
    op, limit = target.split()
    met = value >= float(limit) if op == ">=" else value <= float(limit)
    return "met" if met else "MISSED"


def size_rows(sizes: Figures | None) -> list[Row]:
    rows: list[Row] = []
    found = (sizes or {}).get("sizes", {})

    def ratio_row(what: str, size: int, key: str, target: str, wall: str = "") -> None:
        row = found.get(str(size))
        if row is None:
            rows.append((what, target, "", "not run"))
            return
        text = f"{row[key]:.2f}x" + (f" (wall {row[wall]:.2f}x)" if wall else "")
        rows.append((what, target, text, verdict(row[key], target)))

    for size, label in SIZES.items():
        what = f"write event, {label}: anchor CPU / bridge CPU"
        ratio_row(what, size, "write_cpu_ratio", ">= 1.0", "write_wall_ratio")
    for size in (0, 10000):
        what = f"memory store / bare event, {SIZES[size]} (CPU)"
        ratio_row(what, size, "memory_bare", "<= 1.25" if size == 0 else "<= 3")
    for size in (0, 10000):
        what = f"read event, {SIZES[size]}: anchor CPU / bridge CPU"
        ratio_row(what, size, "read_cpu_ratio", ">= 0.9", "read_wall_ratio")
    return rows


def socket_rows(sizes: Figures | None) -> list[Row]:
    found = (sizes or {}).get("sockets", {})
    rows: list[Row] = []
    most = max((int(n) for n in found), default=0)
    row = found.get(str(most))
    what = f"{most or 16} sockets / 1 socket of one session: bridge CPU per event"
    if row is None or "bridge_vs_1" not in row:
        rows.append((what, "<= 1.25", "", "not run"))
    else:
        text = f"{row['bridge_vs_1']:.2f}x (anchor {row['anchor_vs_1']:.2f}x)"
        rows.append((what, "<= 1.25", text, verdict(row["bridge_vs_1"], "<= 1.25")))
    many = [(n, r) for n, r in sorted(found.items(), key=lambda i: int(i[0])) if int(n) > 1]
    what = "sockets of one session: increments kept, bridge (anchor)"
    if not many:
        rows.append((what, "exact", "", "not run"))
    else:
        text = ", ".join(
            f"{n}: {r['bridge_kept_worst']}/{r['sent']} ({r['anchor_kept']:.0f})" for n, r in many
        )
        exact = all(r["bridge_kept_worst"] == r["sent"] for _, r in many)
        rows.append((what, "exact", text, "met" if exact else "MISSED"))
    return rows


def load_rows(load: Figures | None, alloc: Figures | None) -> list[Row]:
    clients = f"{load['clients']:,} clients" if load else "1,000 clients"
    if load is None:
        names = ("throughput", "CPU per event", "GC share", "kB per socket", "two workers")
        return [(f"{clients}: {n}", "", "", "not run") for n in names]
    bridge, anchor = load["medians"]["bridge, 1 worker"], load["medians"]["anchor, 1 worker"]
    two = load["medians"]["bridge, 2 workers"]
    ratios = load["ratios"]

    def both(key: str, form: str) -> str:
        return f"{format(bridge[key], form)} vs {format(anchor[key], form)}"

    rows: list[Row] = [
        (
            f"{clients}, 1 worker: throughput bridge / anchor",
            ">= 1.0",
            f"{ratios['throughput']:.2f}x ({both('events_per_s', '.0f')} events/s)",
            verdict(ratios["throughput"], ">= 1.0"),
        ),
        (
            f"{clients}: server CPU per event, bridge vs anchor",
            "<= anchor",
            f"{both('server_us_per_event', '.0f')} us",
            verdict(ratios["cpu"], ">= 1.0"),
        ),
        (f"{clients}: GC share of CPU, bridge vs anchor", "reported", both("gc_share", ".0%"), ""),
        (
            f"{clients}: RSS kB per socket, bridge vs anchor",
            "reported",
            both("rss_kb_per_socket", ".1f"),
            "",
        ),
        (
            f"{clients}: errors, bridge, anchor, 2 workers",
            "reported",
            f"{bridge['errors']}, {anchor['errors']}, {two['errors']}",
            "",
        ),
        (
            "two workers / one, throughput",
            ">= 1.6",
            f"{ratios['two_workers']:.2f}x",
            verdict(ratios["two_workers"], ">= 1.6"),
        ),
    ]
    if alloc is not None:
        per_event = alloc["per_event"]
        rows.append(
            (
                f"GC-tracked objects per write event, {alloc['size']} B, bridge vs anchor",
                "reported",
                f"{per_event['bridge write']['young_gc_objects']:.1f}"
                f" vs {per_event['anchor write']['young_gc_objects']:.1f}",
                "",
            )
        )
    return rows


def summary(figures: dict[str, Figures | None], quick: bool) -> str:
    rows = [
        *size_rows(figures.get("sizes")),
        *socket_rows(figures.get("sizes")),
        *load_rows(figures.get("load"), figures.get("alloc")),
    ]
    width = max(len(r[0]) for r in rows)
    measured = max(len(r[2]) for r in rows)
    title = "issue 13 targets, this run" + (" (--quick: smoke settings, noisy)" if quick else "")
    lines = [title, f"{'':<{width}}  {'target':<9}  {'measured':<{measured}}  result"]
    lines += [f"{w:<{width}}  {g:<9}  {m:<{measured}}  {v}".rstrip() for w, g, m, v in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small settings: a smoke test")
    parser.add_argument("--profile", action="store_true", help="also run bench/spy.py")
    parser.add_argument("--parts", default=",".join(PARTS), help="which parts, in order")
    args = parser.parse_args()
    print("versions:", versions(), flush=True)
    figures: dict[str, Figures | None] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        for name in args.parts.split(","):
            figures[name] = run_part(name, PARTS[name] if args.quick else [], folder)
            if figures[name] is None:
                failed.append(name)
    if args.profile:
        options = PROFILE_QUICK if args.quick else []
        print(f"\n=== bench/spy.py {' '.join(options)}", flush=True)
        command = [sys.executable, str(HERE / "spy.py"), *options, "--no-versions"]
        if subprocess.run(command).returncode != 0:
            failed.append("profile")
    print()
    print(summary(figures, args.quick))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
