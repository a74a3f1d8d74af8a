"""Where a webhook's CPU goes: user and system time, and context switches, per request, of the
bridge's web workers against the bare view's, in the same closed loop as bench/run.py's phase 2.

    .venv/bin/python bench/cpu_split.py --database postgres [--rounds 5] [--throughput-seconds 3]

It sets up what bench/run.py does (gunicorn for both servers, the worker, both fakes), pauses the
worker, and reads /proc for every process of each server and for the Postgres server around each
round. On Postgres it also prints how many webhooks shared each commit of the LINE inbox (the
group commit's rows per write transaction). A script, not a test: about a minute."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import run

TICKS = os.sysconf("SC_CLK_TCK")


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def process_tree(root: int) -> list[int]:
    pids = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if pid != root]
    children = []
    for pid in pids:
        try:
            if parent_of(pid) == root:
                children.append(pid)
        except OSError:
            pass  # gone meanwhile
    return [root] + [pid for child in children for pid in process_tree(child)]


def postgres_pids() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == "postgres":
                    found.append(int(pid))
        except OSError:
            pass
    return found


def usage(pids: list[int]) -> tuple[float, float, int, int]:
    """User and system CPU seconds, voluntary and involuntary context switches, summed."""
    user = system = voluntary = involuntary = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/status") as status:
                lines = status.read().splitlines()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
        for line in lines:
            name, _, value = line.partition(":")
            if name == "voluntary_ctxt_switches":
                voluntary += int(value)
            elif name == "nonvoluntary_ctxt_switches":
                involuntary += int(value)
    return user / TICKS, system / TICKS, voluntary, involuntary


def inbox_writes(database_url: str) -> tuple[int, int] | None:
    """(inbox rows, transaction ids handed out so far) on Postgres, where every write transaction
    takes one id; None on SQLite. Read by a connection of the script's own, which takes no id."""
    if not database_url.startswith("postgres"):
        return None
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM sessions_app_inboundevent").fetchone()[0]
        xid = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()[0]
    return rows, int(xid)


def main() -> int:
    args = run.parse_args(sys.argv[1:])
    bench = run.Bench(args)
    try:
        bench.setup()
        bench.warm_up()
        os.kill(bench.worker.pid, signal.SIGSTOP)
        bare_requests = [
            (f"bare{i}", bench.webhook(bench.bare_port, bench.users[i % len(bench.users)], f"x{i}"))
            for i in range(2000)
        ] * 6
        print(
            "server  req/s | per request: user ms  sys ms  vol.cs  invol.cs | postgres user+sys ms"
            " | webhooks per commit"
        )
        database_url = bench.env["DATABASE_URL"]
        for round_no in range(1, args.rounds + 1):
            bridge_requests = bench.webhooks(bench.bridge_port, f"split{round_no}-", 12000)
            for name, port, requests, server in (
                ("bare", bench.bare_port, bare_requests, bench.bare),
                ("bridge", bench.bridge_port, bridge_requests, bench.web),
            ):
                pids, database = process_tree(server.pid), postgres_pids()
                writes_before = inbox_writes(database_url) if name == "bridge" else None
                before, db_before = usage(pids), usage(database)
                _, stats = loadgen.closed_loop(
                    (run.HOST, port),
                    requests,
                    concurrency=args.concurrency,
                    seconds=args.throughput_seconds,
                )
                after, db_after = usage(pids), usage(database)
                shared = ""
                if writes_before is not None:
                    writes_after = inbox_writes(database_url)
                    rows, xids = (b - a for a, b in zip(writes_before, writes_after, strict=True))
                    shared = f" | {rows / max(1, xids):.2f}"
                served = max(1, len(stats["all_results"]))
                user, system, voluntary, involuntary = (
                    (b - a) / served for a, b in zip(before, after, strict=True)
                )
                db_cpu = sum(db_after[:2]) - sum(db_before[:2])
                print(
                    f"{name:6} {served / stats['seconds']:6.0f} | {1000 * user:19.3f} "
                    f"{1000 * system:7.3f} {voluntary:7.2f} {involuntary:9.2f} | "
                    f"{1000 * db_cpu / served:.3f}{shared}",
                    flush=True,
                )
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
