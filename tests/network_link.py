"""A network link to a server that can fail silently: what a bridge process sees when the host of
its Postgres dies or is cut off in a failover. Packets are then dropped, not refused, so an open
connection hears nothing at all, and TCP alone would go on resending for about 15 minutes.

The server is reached through a veth pair into a network namespace of the test's own:

    client ─▶ NS_ADDRESS:port ─[veth]─▶ forwarder in the namespace ─[veth]─▶ TcpProxy on
    HOST_ADDRESS ─▶ the server

`cut()` takes the namespace's end of the link down (every packet on it is dropped); `mend()`
brings it back. Needs root (CI and the development machine run the tests as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.tcp_proxy import TcpProxy

FORWARDER = Path(__file__).with_name("tcp_proxy.py")
IP = shutil.which("ip") or "/usr/sbin/ip"  # iproute2


class LinkUnavailable(Exception):
    """Network namespaces cannot be made here (not root, or no veth in the kernel)."""


def _ip(*args: str) -> None:
    try:
        result = subprocess.run([IP, *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError as exc:
        raise LinkUnavailable("iproute2's `ip` is not installed") from exc
    if result.returncode:
        raise LinkUnavailable(f"ip {' '.join(args)}: {result.stderr.strip()}")


class NetworkLink:
    def __init__(self, target: tuple[str, int]) -> None:
        tag = os.getpid() % 60000
        self.namespace, self._host_end, self._far_end = f"bh{tag}", f"bh{tag}a", f"bh{tag}b"
        subnet = f"10.{200 + tag % 50}.{tag % 250}"
        self.host_address, self.address = f"{subnet}.1", f"{subnet}.2"
        self._forwarder: subprocess.Popen[str] | None = None
        self._proxy: TcpProxy | None = None
        try:
            self._open(target)
        except BaseException:
            self.close()
            raise

    def _open(self, target: tuple[str, int]) -> None:
        _ip("netns", "add", self.namespace)
        _ip("link", "add", self._host_end, "type", "veth", "peer", "name", self._far_end)
        _ip("link", "set", self._far_end, "netns", self.namespace)
        _ip("addr", "add", f"{self.host_address}/30", "dev", self._host_end)
        _ip("link", "set", self._host_end, "up")
        _ip("-n", self.namespace, "addr", "add", f"{self.address}/30", "dev", self._far_end)
        _ip("-n", self.namespace, "link", "set", self._far_end, "up")
        self._proxy = TcpProxy(target, host=self.host_address)
        forwarder = [sys.executable, str(FORWARDER), self.address, self.host_address]
        self._forwarder = subprocess.Popen(
            [IP, "netns", "exec", self.namespace, *forwarder, str(self._proxy.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self._forwarder.stdout.readline())

    def cut(self) -> None:
        _ip("-n", self.namespace, "link", "set", self._far_end, "down")

    def mend(self) -> None:
        _ip("-n", self.namespace, "link", "set", self._far_end, "up")

    def close(self) -> None:
        if self._forwarder is not None:
            self._forwarder.kill()
            self._forwarder.wait(5)
        if self._proxy is not None:
            self._proxy.close()
        subprocess.run([IP, "link", "del", self._host_end], capture_output=True, timeout=10)
        subprocess.run([IP, "netns", "del", self.namespace], capture_output=True, timeout=10)
