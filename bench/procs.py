"""Processes the benchmark starts (each in its own process group, so that it can be ended whole),
and what /proc says about them: peak resident memory (VmHWM) and CPU time."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Processes:
    """Every child started here; `stop_all` ends them (TERM, then KILL), newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen, IO[Any]]] = []

    def start(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path):
        log = open(self.log_dir / f"{name}.log", "wb")  # closed in stop_all
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append((name, process, log))
        return process

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def stop_all(self, timeout: float = 10.0) -> None:
        for _, process, _ in reversed(self.started):
            _signal_group(process, signal.SIGCONT)  # a paused worker must be able to exit
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, process, _ in reversed(self.started):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(5)
        for _, process, log in self.started:
            # Workers the group leader left behind.
            _signal_group(process, signal.SIGKILL)
            log.close()
        self.started.clear()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the group id is the leader's pid (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def read_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS in kB, {} once the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return {}
    return out


def read_stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own cpu seconds, reaped children's cpu seconds), None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ppid, (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def children_of(parents: set[int]) -> dict[int, int]:
    """pid -> parent for the live processes whose parent is in `parents`."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = read_stat(int(entry))
        if stat and stat[0] in parents:
            out[int(entry)] = stat[0]
    return out


def system_busy_seconds() -> float:
    """CPU seconds spent not idle by all cores since boot (from /proc/stat)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLOCK_TICKS


@dataclass
class Tracked:
    role: str
    pid: int
    born: float
    seen_last: float = 0.0
    hwm_kb: int = 0
    rss_kb: int = 0
    cpu: float = 0.0
    alive: bool = True


@dataclass
class Sampler:
    """Polls /proc every `interval` s: peak memory of every process of each role, worker
    restarts (new pids under a gunicorn master), CPU seconds."""

    masters: dict[str, int]  # role prefix ("web", "bare") -> gunicorn master pid
    singles: dict[str, int]  # role ("delivery", "fakes") -> pid
    interval: float = 0.2
    tracked: dict[int, Tracked] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Sampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        now = time.time()
        roles: dict[int, str] = {pid: f"{prefix}-master" for prefix, pid in self.masters.items()}
        roles.update({pid: role for role, pid in self.singles.items()})
        by_master = {pid: prefix for prefix, pid in self.masters.items()}
        for pid, parent in children_of(set(by_master)).items():
            roles[pid] = f"{by_master[parent]}-worker"
        with self._lock:
            seen = set()
            for pid, role in roles.items():
                status = read_status(pid)
                stat = read_stat(pid)
                if not status or stat is None:
                    continue
                seen.add(pid)
                entry = self.tracked.get(pid)
                if entry is None:
                    entry = self.tracked[pid] = Tracked(role, pid, now)
                entry.seen_last = now
                entry.hwm_kb = max(entry.hwm_kb, status.get("VmHWM", 0))
                entry.rss_kb = status.get("VmRSS", 0)
                entry.cpu = stat[1] + (stat[2] if role.endswith("-master") else 0.0)
            for pid, entry in self.tracked.items():
                if pid not in seen:
                    entry.alive = False

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far per group: a gunicorn master counts its reaped workers too."""
        self.sample()
        with self._lock:
            out: dict[str, float] = {}
            for entry in self.tracked.values():
                if entry.role.endswith("-worker") and not entry.alive:
                    continue  # counted in its master's reaped-children time
                group = entry.role.split("-")[0] if "-" in entry.role else entry.role
                out[group] = out.get(group, 0.0) + entry.cpu
            return out

    def entries(self) -> list[Tracked]:
        with self._lock:
            return [Tracked(**vars(e)) for e in self.tracked.values()]

    def births(self, role: str, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for e in self.tracked.values() if e.role == role and start < e.born <= end)


def postgres_seconds() -> float:
    """CPU seconds of the PostgreSQL server's processes (the postmaster counts exited backends)."""
    total = 0.0
    pids: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() != "postgres":
                    continue
        except (FileNotFoundError, ProcessLookupError):
            continue
        stat = read_stat(int(entry))
        if stat is None:
            continue
        pids[int(entry)] = stat[0]
        total += stat[1]
        if stat[0] not in pids:  # maybe the postmaster: add its reaped backends
            total += stat[2]
    return total
