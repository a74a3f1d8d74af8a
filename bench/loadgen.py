"""A small HTTP/1.1 load generator: one thread, non-blocking keep-alive connections, requests
built and signed before the clock starts, so that the client's own cost stays off the path.

`open_loop` sends on a fixed timetable and measures each request from when it was *due*, so a
server that falls behind shows as latency instead of as fewer requests (no coordinated omission).
`closed_loop` keeps C requests in flight for T seconds and counts what comes back."""

from __future__ import annotations

import selectors
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    tag: Any
    due: float  # perf_counter(): when it should have been sent (open loop) or was sent (closed)
    sent: float
    done: float
    status: int  # 0: no answer (connection error)
    retried: int = 0

    @property
    def latency(self) -> float:
        return self.done - self.due


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Connection: keep-alive",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Conn:
    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.job: list | None = None  # [tag, due, sent, payload, retried]
        self.received_any = False

    def send(self, job: list) -> None:
        self.job = job
        self.buf.clear()
        self.received_any = False
        job[2] = time.perf_counter()
        # Requests are ~1 kB on loopback: the socket buffer takes them whole.
        self.sock.setblocking(True)
        try:
            self.sock.sendall(job[3])
        finally:
            self.sock.setblocking(False)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def parse(self) -> tuple[int, bool] | None:
        """(status, keep_alive) once a whole answer is buffered, else None."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        length = 0
        keep_alive = True
        chunked = False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                keep_alive = False
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            return (status, keep_alive) if self._chunks_complete(end + 4) else None
        if len(self.buf) < end + 4 + length:
            return None
        return status, keep_alive

    def _chunks_complete(self, pos: int) -> bool:
        """True once the last (zero-size) chunk and the blank line after it are buffered."""
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return False
            size = int(bytes(buf[pos:eol]).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return buf.find(b"\r\n", eol + 2) >= 0  # no trailers: just the blank line
            pos = eol + 2 + size + 2
            if pos > len(buf):
                return False


class _Loop:
    """The shared machinery: a pool of connections, a queue of jobs waiting for one."""

    def __init__(self, address: tuple[str, int], max_conns: int) -> None:
        self.address = address
        self.max_conns = max_conns
        self.sel = selectors.DefaultSelector()
        self.idle: deque[_Conn] = deque()
        self.busy: set[_Conn] = set()
        self.waiting: deque[list] = deque()
        self.results: list[Result] = []
        self.connects = 0
        self.reconnect_retries = 0

    def dispatch(self) -> None:
        while self.waiting:
            if self.idle:
                conn = self.idle.popleft()
            elif len(self.busy) < self.max_conns:
                try:
                    conn = _Conn(self.address)
                except OSError:
                    job = self.waiting.popleft()
                    now = time.perf_counter()
                    self.results.append(Result(job[0], job[1], now, now, 0, job[4]))
                    continue
                self.connects += 1
            else:
                return
            job = self.waiting.popleft()
            try:
                conn.send(job)
            except OSError:
                conn.close()
                self._failed(job)
                continue
            self.busy.add(conn)
            self.sel.register(conn.sock, selectors.EVENT_READ, conn)

    def _failed(self, job: list) -> None:
        if job[4] < 2:
            # The server closed a keep-alive connection as we used it (keep-alive timeout, a
            # worker restarting): send again on a fresh one; the wait still counts from `due`.
            job[4] += 1
            self.reconnect_retries += 1
            self.waiting.appendleft(job)
        else:
            now = time.perf_counter()
            self.results.append(Result(job[0], job[1], job[2], now, 0, job[4]))

    def _release(self, conn: _Conn, keep: bool) -> None:
        self.sel.unregister(conn.sock)
        self.busy.discard(conn)
        conn.job = None
        if keep:
            self.idle.append(conn)
        else:
            conn.close()

    def poll(self, timeout: float | None) -> list[Result]:
        finished: list[Result] = []
        for key, _ in self.sel.select(timeout):
            conn: _Conn = key.data
            job = conn.job
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                had_answer = conn.received_any
                self._release(conn, keep=False)
                if job is not None:
                    if had_answer:
                        now = time.perf_counter()
                        finished.append(Result(job[0], job[1], job[2], now, 0, job[4]))
                    else:
                        self._failed(job)
                continue
            conn.received_any = True
            conn.buf += data
            parsed = conn.parse()
            if parsed is None:
                continue
            status, keep_alive = parsed
            now = time.perf_counter()
            finished.append(Result(job[0], job[1], job[2], now, status, job[4]))
            self._release(conn, keep=keep_alive)
        self.results.extend(finished)
        return finished

    def close(self) -> None:
        for conn in list(self.idle) + list(self.busy):
            conn.close()
        self.sel.close()


def open_loop(
    address: tuple[str, int],
    requests: Sequence[tuple[Any, bytes]],
    rate: float,
    *,
    max_conns: int = 64,
    drain_timeout: float = 30.0,
) -> tuple[list[Result], dict[str, float]]:
    """Send request i at start + i/rate, whatever happened to the ones before."""
    loop = _Loop(address, max_conns)
    start = time.perf_counter() + 0.05
    total = len(requests)
    index = 0
    try:
        while True:
            now = time.perf_counter()
            while index < total and start + index / rate <= now:
                tag, payload = requests[index]
                loop.waiting.append([tag, start + index / rate, 0.0, payload, 0])
                index += 1
            loop.dispatch()
            if index >= total and not loop.waiting and not loop.busy:
                break
            if index < total:
                timeout = max(0.0, start + index / rate - time.perf_counter())
            else:
                if time.perf_counter() - (start + total / rate) > drain_timeout:
                    break
                timeout = 0.1
            loop.poll(timeout)
        stats = {
            "connections": loop.connects,
            "reconnect_retries": loop.reconnect_retries,
            "unanswered": len(loop.busy) + len(loop.waiting),
            "start": start,
            "end": time.perf_counter(),
        }
        return loop.results, stats
    finally:
        loop.close()


def closed_loop(
    address: tuple[str, int],
    requests: Sequence[tuple[Any, bytes]],
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
) -> tuple[list[Result], dict[str, float]]:
    """C requests in flight until `warmup + seconds` have passed (or the requests run out).
    Results cover only the requests sent after the warm-up."""
    loop = _Loop(address, concurrency)
    begin = time.perf_counter()
    measured_from = begin + warmup
    stop_at = measured_from + seconds
    index = 0
    total = len(requests)
    ran_out = False
    try:
        for _ in range(min(concurrency, total)):
            tag, payload = requests[index]
            loop.waiting.append([tag, 0.0, 0.0, payload, 0])
            index += 1
        loop.dispatch()
        while loop.busy or loop.waiting:
            finished = loop.poll(1.0)
            now = time.perf_counter()
            for _ in finished:
                if now >= stop_at:
                    break
                if index >= total:
                    ran_out = True
                    break
                tag, payload = requests[index]
                loop.waiting.append([tag, now, 0.0, payload, 0])
                index += 1
            loop.dispatch()
            if now > stop_at + 30:
                break
        end = min(time.perf_counter(), stop_at)
        # Throughput: answers that arrived inside the window; latency is from send (closed loop).
        measured = [r for r in loop.results if measured_from <= r.done <= stop_at]
        for r in measured:
            r.due = r.sent
        stats = {
            "seconds": end - measured_from,
            "sent_total": index,
            "ran_out": ran_out,
            "connections": loop.connects,
            "reconnect_retries": loop.reconnect_retries,
            "sent_tags": [requests[i][0] for i in range(index)],
            "all_results": loop.results,
        }
        return measured, stats
    finally:
        loop.close()
