"""Benchmark of the LINE <-> LiveChat bridge, end to end on 127.0.0.1.

    python bench/run.py [--database sqlite|postgres] [--rate 200] [--seconds 10] [--users 50]
                        [--out bench/results/sqlite.md]

Starts the fake LINE and LiveChat servers (tests/fakes, in a child process of their own), the
bridge under gunicorn with gunicorn.conf.py, `manage.py deliver`, and a bare Django view under the
same gunicorn settings; then measures, in order:

  warm-up      every user's first message (first-contact vendor calls per user)
  1 latency    LINE webhook answer time, open loop at --rate deliveries/s (from the timetable)
  3 e2e        user->agent and agent->user relay latency at --e2e-rate/s
  5 calls      vendor calls per relayed message, and while idle
  2 throughput closed loop: the bridge's /line/webhook vs the bare view (delivery worker paused)
  4 sustained  the worker resumed on the backlog (topped up to --burst): relayed messages/s
  6 memory     peak RSS (VmHWM) of every gunicorn worker, the masters and the delivery worker

Prints each phase, then a table against the targets (also written as Markdown to --out)."""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import fakes_proc  # noqa: E402
import loadgen  # noqa: E402
from procs import Processes, Sampler, postgres_seconds, system_busy_seconds  # noqa: E402

from tests.fakes.line import DEFAULT_DESTINATION, sign, text_event  # noqa: E402

HOST = "127.0.0.1"
API_KEY = "bench-bridge-api-key"
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://bridge:bridge@127.0.0.1:5432/bridge")
# Variables of the bridge's that must not leak in from the caller's environment.
OWN_PREFIXES = ("LINE_", "LIVECHAT_", "BRIDGE_", "DELIVERY_", "VENDOR_", "MESSAGES_")
OWN_NAMES = {"DATABASE_URL", "DEBUG", "SSL", "DJANGO_SETTINGS_MODULE", "PORT", "SECRET_KEY"}

MB = 1024 * 1024


class Aborted(Exception):
    pass


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --- small helpers --------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def user_ids(count: int) -> list[str]:
    return [f"U{index:032x}" for index in range(1, count + 1)]


def wait_for(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Row:
    metric: str
    value: str
    target: str
    ok: bool | None  # None: no target, for information


@dataclass
class Phase:
    name: str
    start: float = 0.0  # time.time()
    end: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    profilers: list[Any] = field(default_factory=list)


# --- the benchmark --------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bridge-bench-{args.database}-"))
        self.procs = Processes(self.tmp)
        self.fakes: multiprocessing.Process | None = None
        self.pipe: Any = None
        self.pg_name: str | None = None
        self.sampler: Sampler | None = None
        self.rows: list[Row] = []
        self.phases: list[Phase] = []
        self.users = user_ids(args.users)
        self.deadline = time.monotonic() + args.max_seconds

    # -- plumbing --------------------------------------------------------------------------

    def ask(self, *command: Any) -> Any:
        self.pipe.send(command)
        if not self.pipe.poll(30):
            raise Aborted(f"the fakes process did not answer {command[0]!r}")
        answer = self.pipe.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def remaining(self, wanted: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Aborted("out of time (--max-seconds)")
        return min(wanted, left)

    def marks(self) -> tuple[int, int]:
        return self.ask("marks")

    def counts(self, since: tuple[int, int]) -> dict[str, Any]:
        return self.ask("counts", *since)

    def begin(self, name: str, profile: tuple[tuple[str, int], ...] = ()) -> Phase:
        phase = Phase(name, start=time.time())
        phase.cpu = self.sampler.cpu_by_role() if self.sampler else {}
        phase.cpu["bench"] = sum(os.times()[:2])
        phase.cpu["postgres"] = postgres_seconds()
        phase.busy = system_busy_seconds()
        phase.profilers = [self.profile(name, pid, phase.name) for name, pid in profile]
        return phase

    def finish(self, phase: Phase) -> Phase:
        phase.end = time.time()
        after = self.sampler.cpu_by_role() if self.sampler else {}
        after["bench"] = sum(os.times()[:2])
        after["postgres"] = postgres_seconds()
        phase.cpu = {k: after.get(k, 0.0) - phase.cpu.get(k, 0.0) for k in after}
        phase.busy = system_busy_seconds() - phase.busy
        for profiler in phase.profilers:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                try:
                    profiler.wait(30)
                except subprocess.TimeoutExpired:
                    profiler.kill()
        self.phases.append(phase)
        return phase

    def profile(self, name: str, pid: int, phase: str) -> subprocess.Popen | None:
        """py-spy on `pid` (and its children) for one phase, when --profile DIR is given."""
        if not self.args.profile:
            return None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        slug = "".join(c if c.isalnum() else "-" for c in phase).strip("-")
        out = Path(self.args.profile) / f"{self.args.database}-{slug}-{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [
                *(spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"),
                *("--rate", "200", "--format", "raw", "-o", str(out)),
                *(("--gil",) if self.args.profile_gil else ()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def webhook(self, port: int, user: str, text: str) -> bytes:
        event = text_event(user, text)
        body = json.dumps(
            {"destination": DEFAULT_DESTINATION, "events": [event]},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        return loadgen.build_request(
            HOST,
            port,
            "/line/webhook",
            body,
            {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "LineBotWebhook/2.0",
                "x-line-signature": sign(self.info["line_secret"], body),
            },
        )

    def webhooks(self, port: int, prefix: str, count: int) -> list[tuple[str, bytes]]:
        users = self.users
        return [
            (f"{prefix}{i}", self.webhook(port, users[i % len(users)], f"{prefix}{i}"))
            for i in range(count)
        ]

    def wait_relayed(self, prefixes: list[str], expected: int, timeout: float) -> int:
        got = 0

        def done() -> bool:
            nonlocal got
            got = self.ask("lc_count", prefixes)
            return got >= expected

        wait_for(done, self.remaining(timeout), step=0.05)
        return got

    # -- setup -----------------------------------------------------------------------------

    def wait_quiet(self) -> None:
        """The machine may be shared (a test run next door): wait a while for it to calm down."""
        if self.args.wait_quiet <= 0:
            return
        deadline = time.monotonic() + self.args.wait_quiet
        while True:
            before = system_busy_seconds()
            time.sleep(1.0)
            load = system_busy_seconds() - before
            if load < 0.25 or time.monotonic() >= deadline:
                break
        self.load_before = load
        say(f"CPU busy before starting: {load:.2f} cores (other processes)")

    def setup(self) -> None:
        args = self.args
        say(f"# bridge benchmark: {args.database}, {os.cpu_count()} CPUs, temp dir {self.tmp}")
        self.wait_quiet()
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.fakes = ctx.Process(target=fakes_proc.serve, args=(child,), daemon=True)
        self.fakes.start()
        if not self.pipe.poll(30):
            raise Aborted("the fakes process did not start")
        self.info = self.pipe.recv()

        if args.database == "sqlite":
            database_url = f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        else:
            database_url = self.create_pg_database()
        self.bridge_port, self.bare_port = free_port(), free_port()
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(OWN_PREFIXES) and k not in OWN_NAMES
        }
        base.setdefault("WEB_CONCURRENCY", "2")
        base.setdefault("GUNICORN_THREADS", "8")
        # At the bare view's ~6,000 req/s its workers reached max_requests inside a throughput
        # round, and the replacement's share of the keep-alive connections halved that round:
        # a measurement artefact, not a cost either server has per request.
        base.setdefault("GUNICORN_MAX_REQUESTS", "0")
        self.web_concurrency = base["WEB_CONCURRENCY"]
        self.threads = base["GUNICORN_THREADS"]
        self.max_requests = base["GUNICORN_MAX_REQUESTS"]
        info = self.info
        self.env = {
            **base,
            "DJANGO_SETTINGS_MODULE": "bridge.settings",
            "SECRET_KEY": "bench-secret-key-" + "x" * 40,
            "ALLOWED_HOSTS": f"{HOST},localhost",
            "DATABASE_URL": database_url,
            "LINE_CHANNEL_SECRET": info["line_secret"],
            "LINE_CHANNEL_ACCESS_TOKEN": info["line_token"],
            "LINE_API_BASE_URL": info["line_url"],
            "LINE_DATA_API_BASE_URL": info["line_data_url"],
            "LIVECHAT_API_BASE_URL": info["livechat_url"],
            "LIVECHAT_ACCOUNTS_BASE_URL": info["livechat_url"],
            "LIVECHAT_CLIENT_ID": info["client_id"],
            "LIVECHAT_CLIENT_SECRET": info["client_secret"],
            "LIVECHAT_ORGANIZATION_ID": info["organization_id"],
            "LIVECHAT_REFRESH_TOKEN": info["refresh_token"],
            "LIVECHAT_WEBHOOK_SECRET": info["webhook_secret"],
            "BRIDGE_API_KEY": API_KEY,
            "LOG_LEVEL": "INFO",  # what the bridge runs with unless told otherwise
        }
        say(f"database: {database_url}")
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            timeout=self.remaining(120),
        )
        if migrate.returncode:
            raise Aborted(f"migrate failed:\n{migrate.stdout.decode()}{migrate.stderr.decode()}")

        gunicorn = [sys.executable, "-m", "gunicorn"]
        self.web = self.procs.start(
            "web",
            [
                *gunicorn,
                "bridge.wsgi",
                "--config",
                "gunicorn.conf.py",
                "--bind",
                f"{HOST}:{self.bridge_port}",
            ],
            env={**self.env, "PORT": str(self.bridge_port)},
            cwd=ROOT,
        )
        bare_env = {k: v for k, v in self.env.items() if k != "DJANGO_SETTINGS_MODULE"}
        self.bare = self.procs.start(
            "bare",
            [
                *gunicorn,
                "bare_app:application",
                "--pythonpath",
                str(BENCH),
                "--config",
                "gunicorn.conf.py",
                "--bind",
                f"{HOST}:{self.bare_port}",
            ],
            env={**bare_env, "PORT": str(self.bare_port)},
            cwd=ROOT,
        )
        self.worker = self.procs.start(
            "delivery", [sys.executable, "manage.py", "deliver"], env=self.env, cwd=ROOT
        )
        profiles = {
            uid: {"userId": uid, "displayName": f"Bench user {i}", "language": "en"}
            for i, uid in enumerate(self.users)
        }
        self.ask("configure", f"http://{HOST}:{self.bridge_port}/livechat/webhook", profiles)

        def healthy() -> bool:
            try:
                url = f"http://{HOST}:{self.bridge_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return answer.status == 200
            except (OSError, urllib.error.URLError):
                return False

        def bare_up() -> bool:
            try:
                with socket.create_connection((HOST, self.bare_port), timeout=1):
                    return True
            except OSError:
                return False

        if not wait_for(healthy, self.remaining(30), 0.1) or not wait_for(bare_up, 30, 0.1):
            raise Aborted("gunicorn did not come up; see the logs in " + str(self.tmp))
        if self.worker.poll() is not None:
            raise Aborted("the delivery worker exited; see " + str(self.procs.log_path("delivery")))
        self.sampler = Sampler(
            masters={"web": self.web.pid, "bare": self.bare.pid},
            singles={"delivery": self.worker.pid, "fakes": self.fakes.pid},
        ).start()
        say(
            f"gunicorn.conf.py: WEB_CONCURRENCY={self.web_concurrency}, "
            f"GUNICORN_THREADS={self.threads}, GUNICORN_MAX_REQUESTS={self.max_requests}; "
            f"bridge :{self.bridge_port}, "
            f"bare view :{self.bare_port}; fakes in pid {self.fakes.pid}"
        )

    def create_pg_database(self) -> str:
        import psycopg
        from psycopg import sql

        self.pg_name = f"bridge_bench_{os.getpid()}_{int(time.time())}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.pg_name)))
        base, _, _ = PG_ADMIN_URL.rpartition("/")
        return f"{base}/{self.pg_name}"

    def drop_pg_database(self) -> None:
        if not self.pg_name:
            return
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.pg_name)
                    )
                )
        except Exception as exc:
            say(f"(could not drop database {self.pg_name}: {exc})")

    def cleanup(self) -> None:
        if self.sampler:
            self.sampler.stop()
        self.procs.stop_all()
        if self.fakes is not None:
            try:
                self.pipe.send(("stop",))
                self.pipe.poll(5)
            except (OSError, EOFError, BrokenPipeError):
                pass
            self.fakes.join(5)
            if self.fakes.is_alive():
                self.fakes.kill()
                self.fakes.join(5)
        self.drop_pg_database()
        for path in self.tmp.glob("bench.sqlite3*"):
            path.unlink()  # the logs stay

    # -- phases ----------------------------------------------------------------------------

    def warm_up(self) -> None:
        say("\n## warm-up: each user's first message (first contact), then steady traffic")
        since = self.marks()
        users = len(self.users)
        address = (HOST, self.bridge_port)
        results, _ = loadgen.open_loop(address, self.webhooks(self.bridge_port, "w-", users), 50)
        ok = sum(1 for r in results if r.status == 200)
        got = self.wait_relayed(["w-"], ok, 60)
        time.sleep(0.5)  # calls that follow the one carrying the text
        calls = self.counts(since)
        self.first_contact = calls
        say(f"first messages: {ok}/{users} accepted, {got} relayed to LiveChat")
        say(f"  LiveChat calls: {calls['livechat']}")
        say(f"  LINE calls:     {calls['line']}")
        # Both gunicorns' workers past their first requests before anything is measured.
        loadgen.open_loop(address, self.webhooks(self.bridge_port, "w2-", 200), 100)
        bare = [(i, self.webhook(self.bare_port, self.users[0], f"x{i}")) for i in range(200)]
        loadgen.open_loop((HOST, self.bare_port), bare, 100)
        self.wait_relayed(["w2-"], 200, 60)

    def phase_latency(self) -> None:
        args = self.args
        count = int(args.rate * args.seconds)
        say(
            f"\n## 1. LINE webhook answer time: open loop, {args.rate:g} deliveries/s for "
            f"{args.seconds:g} s ({count} deliveries, 1 text event each, {len(self.users)} users)"
        )
        requests = self.webhooks(self.bridge_port, "p1-", count)
        phase = self.begin(
            f"1 webhook @{args.rate:g}/s", (("web", self.web.pid), ("delivery", self.worker.pid))
        )
        wall = time.time() - time.perf_counter()
        results, stats = loadgen.open_loop((HOST, self.bridge_port), requests, args.rate)
        sent_end = time.time()
        self.finish(phase)
        latencies = [r.latency for r in results]
        statuses = Counter(r.status for r in results)
        ok = statuses.get(200, 0)
        bad = len(requests) - ok
        self.latency = {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=math.nan),
            "bad": bad,
        }
        say(
            f"answer time from the timetable: p50 {ms(self.latency['p50'])}, "
            f"p90 {ms(percentile(latencies, 90))}, p99 {ms(self.latency['p99'])}, "
            f"max {ms(self.latency['max'])}"
        )
        service = [r.done - r.sent for r in results]
        say(
            f"  (from the actual send: p50 {ms(percentile(service, 50))}, "
            f"p99 {ms(percentile(service, 99))}; statuses {dict(statuses)}; "
            f"connections {stats['connections']}, resent after a closed keep-alive "
            f"{stats['reconnect_retries']}; web worker restarts "
            f"{self.sampler.births('web-worker', phase.start, phase.end)})"
        )
        # The worker relays these meanwhile: did it keep up with the webhook rate?
        got = self.wait_relayed(["p1-"], ok, 90)
        times = self.ask("lc_times", ["p1-"])
        last = max(times.values(), default=sent_end)
        relay = [
            times[r.tag] - (wall + r.due) for r in results if r.status == 200 and r.tag in times
        ]
        self.phase1_relay = {"got": got, "ok": ok, "lag": last - sent_end}
        say(
            f"relayed to LiveChat meanwhile: {got}/{ok}; the last one {last - sent_end:+.2f} s "
            f"after the last webhook; webhook->LiveChat p50 {ms(percentile(relay, 50))}, "
            f"p99 {ms(percentile(relay, 99))}"
        )

    def phase_e2e(self) -> None:
        args = self.args
        count = int(args.e2e_rate * args.e2e_seconds)
        say(
            f"\n## 3. end-to-end relay latency: {args.e2e_rate:g} messages/s for "
            f"{args.e2e_seconds:g} s each way, fakes answering at once"
        )
        # user -> agent: the webhook is due .. the fake LiveChat receives the call carrying it
        since = self.marks()
        requests = self.webhooks(self.bridge_port, "e2u-", count)
        phase = self.begin("3 e2e user->agent", (("delivery", self.worker.pid),))
        wall = time.time() - time.perf_counter()
        results, _ = loadgen.open_loop((HOST, self.bridge_port), requests, args.e2e_rate)
        ok = [r for r in results if r.status == 200]
        got = self.wait_relayed(["e2u-"], len(ok), 30)
        self.finish(phase)
        time.sleep(0.3)
        self.user_calls = self.counts(since)
        self.user_texts = len(ok)
        times = self.ask("lc_times", ["e2u-"])
        to_agent = [times[r.tag] - (wall + r.due) for r in ok if r.tag in times]
        self.to_agent = to_agent
        say(
            f"user->agent: {got}/{count} relayed; p50 {ms(percentile(to_agent, 50))}, "
            f"p99 {ms(percentile(to_agent, 99))}, max {ms(max(to_agent, default=math.nan))}"
        )

        # agent -> user: the fake LiveChat posts incoming_event .. the fake LINE gets the push
        chats = self.ask("chat_ids")
        users = [u for u in self.users if u in chats]
        if not users:
            raise Aborted("no LiveChat chat was started for any bench user")
        since = self.marks()
        phase = self.begin("3 e2e agent->user")
        start = time.perf_counter() + 0.05
        for i in range(count):
            due = start + i / args.e2e_rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            self.ask("agent_say", chats[users[i % len(users)]], f"e2a-{i}")
        got = 0

        def pushed() -> bool:
            nonlocal got
            got = self.ask("line_count", ["e2a-"])
            return got >= count

        wait_for(pushed, self.remaining(30))
        self.finish(phase)
        time.sleep(0.3)
        self.agent_calls = self.counts(since)
        sent = self.ask("agent_sent", ["e2a-"])
        self.agent_texts = sum(1 for v in sent.values() if v[2] == "ok")
        times = self.ask("line_times", ["e2a-"])
        to_user = [times[t] - v[0] for t, v in sent.items() if t in times]
        self.to_user = to_user
        failed = [v[2] for v in sent.values() if v[2] != "ok"]
        say(
            f"agent->user: {got}/{count} pushed; p50 {ms(percentile(to_user, 50))}, "
            f"p99 {ms(percentile(to_user, 99))}, max {ms(max(to_user, default=math.nan))}"
            + (f"; {len(failed)} webhook posts failed: {failed[:3]}" if failed else "")
        )
        hook = [r for r in results if r.status == 200]
        say(f"  (user->agent webhook answers p50 {ms(percentile([r.latency for r in hook], 50))})")

    def phase_calls(self) -> None:
        args = self.args
        say("\n## 5. vendor calls per relayed message")
        users = len(self.users)
        fc = self.first_contact
        say(
            f"first contact, per new user ({users} users): LiveChat "
            f"{sum(fc['livechat'].values()) / users:.2f} calls {fc['livechat']}, LINE "
            f"{sum(fc['line'].values()) / users:.2f} calls {fc['line']}"
        )
        uc, ac = self.user_calls, self.agent_calls
        self.lc_per_text = sum(uc["livechat"].values()) / max(1, self.user_texts)
        self.line_per_text = sum(uc["line"].values()) / max(1, self.user_texts)
        pushes = ac["line"].get("POST /v2/bot/message/push", 0)
        self.push_per_agent = pushes / max(1, self.agent_texts)
        self.line_per_agent = sum(ac["line"].values()) / max(1, self.agent_texts)
        self.lc_per_agent = sum(ac["livechat"].values()) / max(1, self.agent_texts)
        say(
            f"steady state, per user text ({self.user_texts}): LiveChat {self.lc_per_text:.3f} "
            f"{uc['livechat']}, LINE {self.line_per_text:.3f} {uc['line']}"
        )
        say(
            f"per agent message ({self.agent_texts}): LINE push {self.push_per_agent:.3f} "
            f"(all LINE calls {self.line_per_agent:.3f} {ac['line']}), LiveChat "
            f"{self.lc_per_agent:.3f} {ac['livechat']}"
        )
        since = self.marks()
        time.sleep(self.remaining(args.idle_seconds))
        idle = self.counts(since)
        self.idle_calls = sum(idle["livechat"].values()) + sum(idle["line"].values())
        say(
            f"idle for {args.idle_seconds:g} s: {self.idle_calls} vendor calls "
            f"(LiveChat {idle['livechat']}, LINE {idle['line']})"
        )

    def phase_throughput(self) -> None:
        args = self.args
        say(
            f"\n## 2. webhook throughput: closed loop, {args.concurrency} keep-alive clients, "
            f"{args.rounds} rounds of bare then bridge, 1 s warm-up + "
            f"{args.throughput_seconds:g} s each; delivery worker paused (SIGSTOP) so that both "
            "servers have the same CPU"
        )
        # Which gunicorn worker accepts each keep-alive connection is up to the kernel, and a run
        # where most land on one worker is up to half as fast, for either server: several rounds,
        # and each server's best (its connections spread over both workers), so that one
        # server's lucky split against the other's unlucky one does not decide the ratio.
        os.kill(self.worker.pid, signal.SIGSTOP)
        self.worker_paused = time.time()
        # Enough unique deliveries for the bridge (a repeated webhookEventId is a duplicate).
        budget = int(5000 * (args.throughput_seconds + 1))
        pool = [
            (f"bare{i}", self.webhook(self.bare_port, self.users[i % len(self.users)], f"x{i}"))
            for i in range(2000)
        ]
        bare_requests = [pool[i % len(pool)] for i in range(budget * 3)]
        out: dict[str, list[dict[str, Any]]] = {"bare": [], "bridge": []}
        self.tp_accepted = 0
        for round_no in range(1, args.rounds + 1):
            bridge_requests = self.webhooks(self.bridge_port, f"tp{round_no}-", budget)
            for name, port, requests in (
                ("bare", self.bare_port, bare_requests),
                ("bridge", self.bridge_port, bridge_requests),
            ):
                server = self.web if name == "bridge" else self.bare
                phase = self.begin(f"2 throughput {name}", ((name, server.pid),))
                results, stats = loadgen.closed_loop(
                    (HOST, port),
                    requests,
                    concurrency=args.concurrency,
                    seconds=self.remaining(args.throughput_seconds),
                )
                self.finish(phase)
                ok = [r for r in results if r.status == 200]
                rps = len(ok) / stats["seconds"]
                served = max(1, len(stats["all_results"]))
                group = "web" if name == "bridge" else "bare"
                cpu_ms = 1000 * phase.cpu.get(group, 0.0) / served
                db_ms = 1000 * phase.cpu.get("postgres", 0.0) / served
                lat = [r.latency for r in ok]
                out[name].append({"rps": rps, "stats": stats, "results": results})
                if name == "bridge":
                    self.tp_accepted += sum(1 for r in stats["all_results"] if r.status == 200)
                role = "web-worker" if name == "bridge" else "bare-worker"
                say(
                    f"round {round_no} {name:6}: {rps:7.1f} req/s (200s only; "
                    f"{len(results) - len(ok)} others), latency p50 {ms(percentile(lat, 50))}, "
                    f"p99 {ms(percentile(lat, 99))}"
                    + (" [ran out of prepared requests]" if stats["ran_out"] else "")
                    + f"; worker restarts {self.sampler.births(role, phase.start, phase.end)}"
                    + f"; CPU per request: gunicorn {cpu_ms:.2f} ms"
                    + (f" + postgres {db_ms:.2f} ms" if self.args.database == "postgres" else "")
                )
        self.throughput = {
            name: {"rps": max(r["rps"] for r in runs), "rounds": [r["rps"] for r in runs]}
            for name, runs in out.items()
        }
        bare, bridge = self.throughput["bare"]["rps"], self.throughput["bridge"]["rps"]
        self.ratio = bridge / bare if bare else math.nan
        # Each round's bridge against the bare view just before it: what a slower spell of the
        # machine does to both, this cancels; an unlucky connection split of either does not.
        rounds = zip(
            self.throughput["bare"]["rounds"], self.throughput["bridge"]["rounds"], strict=True
        )
        paired = [b / a for a, b in rounds if a]
        self.paired_ratio = statistics.median(paired) if paired else math.nan
        say(f"best of {args.rounds} rounds: bare {bare:.0f}, bridge {bridge:.0f} req/s")
        say(f"ratio bridge/bare: {self.ratio:.2f} (rounds' own, median: {self.paired_ratio:.2f})")

    def phase_sustained(self) -> None:
        args = self.args
        queued = self.tp_accepted
        top_up = max(0, args.burst - queued)
        say(
            f"\n## 4. sustained relay: {queued} texts queued by phase 2, + {top_up} more, "
            "while the worker is paused; then it is resumed"
        )
        accepted = queued
        if top_up:
            results, _ = loadgen.closed_loop(
                (HOST, self.bridge_port),
                self.webhooks(self.bridge_port, "burst-", top_up),
                concurrency=args.concurrency,
                seconds=self.remaining(60),
                warmup=0,
            )
            accepted += sum(1 for r in results if r.status == 200)
        # Phase 2 may queue far more than --burst; the rate is taken over the first --burst (the
        # worker goes on with the rest meanwhile, in the order they came).
        target = min(accepted, args.burst) if accepted > args.burst else accepted
        since = self.marks()
        phase = self.begin("4 sustained relay", (("delivery", self.worker.pid),))
        resumed = time.time()
        os.kill(self.worker.pid, signal.SIGCONT)
        got = self.wait_relayed(["tp", "burst-"], target, 150)
        self.finish(phase)
        calls = self.counts(since)
        relayed_now = self.ask("lc_count", ["tp", "burst-"])
        times = sorted(self.ask("lc_times", ["tp", "burst-"]).values())
        last = times[min(target, len(times)) - 1] if times else resumed
        elapsed = last - resumed
        counted = min(got, target)
        self.sustained = counted / elapsed if elapsed > 0 else math.nan
        self.sustained_done = got >= target
        self.burst_calls = sum(calls["livechat"].values()) / max(1, relayed_now)
        say(
            f"{counted}/{target} relayed in {elapsed:.2f} s: {self.sustained:.1f} messages/s "
            f"(LiveChat calls per text {self.burst_calls:.3f} {calls['livechat']}); "
            f"{accepted - target} more queued behind them"
        )
        self.burst_count = target

    # -- the report ------------------------------------------------------------------------

    def memory(self) -> None:
        say("\n## 6. peak resident memory (VmHWM)")
        entries = sorted(self.sampler.entries(), key=lambda e: (e.role, e.born))
        for role in ("web-master", "web-worker", "delivery", "bare-master", "bare-worker", "fakes"):
            group = [e for e in entries if e.role == role]
            if not group:
                continue
            peak = max(e.hwm_kb for e in group) / 1024
            say(
                f"{role:12}: peak {peak:6.1f} MB over {len(group)} process(es) "
                f"[{', '.join(f'{e.pid}:{e.hwm_kb / 1024:.0f}' for e in group)}]"
            )
        self.rss = {
            role: max((e.hwm_kb for e in entries if e.role == role), default=0) / 1024
            for role in ("web-master", "web-worker", "delivery", "bare-worker")
        }
        self.web_workers_seen = sum(1 for e in entries if e.role == "web-worker")

    def cpu_table(self) -> list[str]:
        cores = os.cpu_count() or 1
        groups = ["web", "delivery", "fakes", "bench", "bare", "postgres"]
        lines = [
            "| phase | wall s | all CPU % of "
            + f"{cores} cores | "
            + " | ".join(f"{g} CPU-s" for g in groups)
            + " | anything else CPU-s |",
            "|---" * (4 + len(groups)) + "|",
        ]
        for p in self.phases:
            wall = p.end - p.start
            ours = sum(p.cpu.get(g, 0.0) for g in groups)
            lines.append(
                f"| {p.name} | {wall:.1f} | {100 * p.busy / (wall * cores):.0f} | "
                + " | ".join(f"{p.cpu.get(g, 0.0):.2f}" for g in groups)
                + f" | {max(0.0, p.busy - ours):.2f} |"
            )
        return lines

    def _rounds(self, name: str) -> str:
        return ", ".join(f"{rps:.0f}" for rps in self.throughput[name]["rounds"])

    def table(self) -> list[str]:
        a = self.args
        lat = self.latency
        rows = [
            Row(
                f"LINE webhook answer p50 @ {a.rate:g}/s (open loop, from timetable)",
                ms(lat["p50"]),
                "",
                None,
            ),
            Row(f"LINE webhook answer p99 @ {a.rate:g}/s", ms(lat["p99"]), "≤ 50 ms", None),
            Row("LINE webhook answer max", ms(lat["max"]), "", None),
            Row("LINE webhook non-200 answers", str(lat["bad"]), "0", lat["bad"] == 0),
            Row(
                f"webhook throughput, bridge (closed loop, C={a.concurrency}, best of "
                f"{a.rounds} rounds: {self._rounds('bridge')})",
                f"{self.throughput['bridge']['rps']:.0f} req/s",
                "",
                None,
            ),
            Row(
                f"webhook throughput, bare signature-check view ({self._rounds('bare')})",
                f"{self.throughput['bare']['rps']:.0f} req/s",
                "",
                None,
            ),
            Row("throughput ratio bridge / bare", f"{self.ratio:.2f}", "≥ 0.60", None),
            Row(
                "median of each round's own bridge / bare ratio (information)",
                f"{self.paired_ratio:.2f}",
                "",
                None,
            ),
            Row("e2e user→agent p50", ms(percentile(self.to_agent, 50)), "≤ 100 ms", None),
            Row("e2e user→agent p99", ms(percentile(self.to_agent, 99)), "≤ 500 ms", None),
            Row("e2e agent→user p50", ms(percentile(self.to_user, 50)), "≤ 100 ms", None),
            Row("e2e agent→user p99", ms(percentile(self.to_user, 99)), "≤ 500 ms", None),
            Row(
                f"relayed messages/s sustained (burst of {self.burst_count})",
                f"{self.sustained:.1f}",
                "",
                None,
            ),
            Row(
                f"worker kept up with {a.rate:g}/s webhooks (last relay after last webhook)",
                f"{self.phase1_relay['lag']:+.2f} s",
                "",
                None,
            ),
            Row(
                "LiveChat calls per user text (steady state)",
                f"{self.lc_per_text:.3f}",
                "1",
                None,
            ),
            Row(
                "LiveChat calls per new user (first contact, incl. its first text)",
                f"{sum(self.first_contact['livechat'].values()) / len(self.users):.2f}",
                "",
                None,
            ),
            Row("LINE calls per user text (steady state)", f"{self.line_per_text:.3f}", "0", None),
            Row("LINE pushes per agent message", f"{self.push_per_agent:.3f}", "≤ 1", None),
            Row("LiveChat calls per agent message", f"{self.lc_per_agent:.3f}", "0", None),
            Row(f"vendor calls while idle ({a.idle_seconds:g} s)", str(self.idle_calls), "0", None),
            Row(
                f"peak RSS per web worker (max of {self.web_workers_seen})",
                f"{self.rss['web-worker']:.1f} MB",
                "≤ 150 MB",
                None,
            ),
            Row("peak RSS delivery worker", f"{self.rss['delivery']:.1f} MB", "≤ 150 MB", None),
            Row("peak RSS gunicorn master", f"{self.rss['web-master']:.1f} MB", "", None),
            Row(
                "peak RSS bare-view worker (reference)",
                f"{self.rss['bare-worker']:.1f} MB",
                "",
                None,
            ),
        ]
        checks = {
            "LINE webhook answer p99": lat["p99"] <= 0.050,
            "throughput ratio": self.ratio >= 0.6,
            "e2e user→agent p50": percentile(self.to_agent, 50) <= 0.100,
            "e2e user→agent p99": percentile(self.to_agent, 99) <= 0.500,
            "e2e agent→user p50": percentile(self.to_user, 50) <= 0.100,
            "e2e agent→user p99": percentile(self.to_user, 99) <= 0.500,
            "LiveChat calls per user text": abs(self.lc_per_text - 1) < 1e-9,
            "LINE calls per user text": self.line_per_text == 0,
            "LINE pushes per agent": self.push_per_agent <= 1,
            "LiveChat calls per agent": self.lc_per_agent == 0,
            "vendor calls while idle": self.idle_calls == 0,
            "peak RSS per web worker": self.rss["web-worker"] <= 150,
            "peak RSS delivery worker": self.rss["delivery"] <= 150,
        }
        for row in rows:
            for prefix, ok in checks.items():
                if row.metric.startswith(prefix):
                    row.ok = ok
        self.rows = rows
        lines = ["| metric | value | target | |", "|---|---|---|---|"]
        for row in rows:
            verdict = "" if row.ok is None else ("PASS" if row.ok else "**FAIL**")
            lines.append(f"| {row.metric} | {row.value} | {row.target} | {verdict} |")
        return lines

    def report(self) -> str:
        a = self.args
        head = [
            f"# Bridge benchmark — {a.database}",
            "",
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs; Python "
            f"{sys.version.split()[0]}; gunicorn.conf.py with WEB_CONCURRENCY="
            f"{self.web_concurrency}, GUNICORN_THREADS={self.threads}, GUNICORN_MAX_REQUESTS="
            f"{self.max_requests}; {len(self.users)} LINE "
            "users; fakes in a separate process (TCP_NODELAY on, so that they answer at once); "
            "load generator: one thread, keep-alive connections.",
            "",
        ]
        body = self.table()
        passed = sum(1 for r in self.rows if r.ok)
        failed = sum(1 for r in self.rows if r.ok is False)
        groups = ("web", "delivery", "fakes", "bench", "bare", "postgres")
        wall = sum(p.end - p.start for p in self.phases) * (os.cpu_count() or 1)
        foreign = sum(
            max(0.0, p.busy - sum(p.cpu.get(g, 0.0) for g in groups)) for p in self.phases
        )
        tail = [
            "",
            f"{passed} PASS, {failed} FAIL.",
            "",
            "CPU by phase (web = gunicorn master + workers, incl. restarted ones; postgres = "
            "every postgres process on the machine):",
            "",
            *self.cpu_table(),
            "",
            f"Processes not started by the benchmark used {foreign:.1f} CPU-s, "
            f"{100 * foreign / wall:.0f}% of the machine during the measured phases"
            + (": the figures above are disturbed by them." if foreign > 0.05 * wall else "."),
        ]
        return "\n".join(head + body + tail) + "\n"

    def run(self) -> int:
        self.setup()
        self.warm_up()
        self.phase_latency()
        self.phase_e2e()
        self.phase_calls()
        self.phase_throughput()
        self.phase_sustained()
        self.memory()
        errors = self.ask("errors")
        if errors:
            say(f"\nthe fake LiveChat reported errors of its own: {errors[:5]}")
        problems = _log_problems(self.procs.log_path("delivery"))
        problems += _log_problems(self.procs.log_path("web"))
        if problems:
            say(f"\nwarnings/errors in the bridge's logs ({len(problems)}), first ones:")
            for line in problems[:8]:
                say("  " + line)
        report = self.report()
        say("\n" + report)
        if self.args.out:
            out = Path(self.args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report)
            say(f"written to {out}")
        return 1 if any(r.ok is False for r in self.rows) else 0


def _log_problems(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [
        line
        for line in text.splitlines()
        if (" WARNING " in line or " ERROR " in line or "Traceback" in line)
        and "Booting worker" not in line
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rate", type=float, default=200, help="webhooks/s in phase 1")
    parser.add_argument("--seconds", type=float, default=10, help="length of phase 1")
    parser.add_argument("--users", type=int, default=50, help="distinct LINE users")
    parser.add_argument("--e2e-rate", type=float, default=20, help="messages/s in phase 3")
    parser.add_argument("--e2e-seconds", type=float, default=8, help="per direction")
    parser.add_argument("--concurrency", type=int, default=16, help="clients in phase 2")
    parser.add_argument("--throughput-seconds", type=float, default=3, help="per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of phase 2")
    parser.add_argument("--burst", type=int, default=2000, help="queued texts in phase 4")
    parser.add_argument("--idle-seconds", type=float, default=3)
    parser.add_argument("--max-seconds", type=float, default=240, help="hard limit on the run")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=30,
        help="wait up to this long for other processes to leave the CPUs idle before starting",
    )
    parser.add_argument("--out", help="also write the Markdown report here")
    parser.add_argument("--profile", help="run py-spy on the servers per phase; raw stacks here")
    parser.add_argument(
        "--profile-gil", action="store_true", help="py-spy samples only threads holding the GIL"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    bench = Bench(args)
    started = time.monotonic()
    code = 2
    try:
        code = bench.run()
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything")
        code = 130
    except Aborted as exc:
        say(f"\nbenchmark aborted: {exc}")
        for name in ("web", "delivery", "bare"):
            tail = _tail(bench.procs.log_path(name))
            if tail:
                say(f"--- {name}.log (tail) ---\n{tail}")
    finally:
        bench.cleanup()
        say(f"(whole run {time.monotonic() - started:.0f} s; logs in {bench.tmp})")
    return code


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
