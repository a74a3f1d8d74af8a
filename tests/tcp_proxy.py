"""A TCP forwarder on 127.0.0.1 that can be taken down and brought back: what a bridge process sees
of a database server that restarts or fails over (its connections cut, new ones refused)."""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    """Forwards each connection to `target`; `down()` cuts every open one and closes new ones as
    they arrive; `hang()` leaves open ones be and accepts new ones without a word (a server that
    is overloaded or half gone); `up()` forwards again."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self._listener = socket.create_server((host, port))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._held: list[socket.socket] = []
        self._up = True
        self._hanging = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def down(self) -> None:
        with self._lock:
            self._up = False
            cut, self._open = self._open, set()
        for sock in cut:
            _close(sock)

    def hang(self) -> None:
        with self._lock:
            self._hanging = True

    def up(self) -> None:
        with self._lock:
            self._up, self._hanging = True, False
            held, self._held = self._held, []
        for sock in held:
            _close(sock)

    def close(self) -> None:
        self._closed = True
        self.down()
        self.up()  # closes what hang() held
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                forwarding, hanging = self._up, self._hanging
                if hanging:
                    self._held.append(client)
            if hanging:
                continue
            if not forwarding:
                _close(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._open.discard(source)
            self._open.discard(sink)
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


if __name__ == "__main__":
    # `python tests/tcp_proxy.py HOST TARGET_HOST TARGET_PORT`: a forwarder on its own (in another
    # network namespace, see network_link.py); prints its port, then forwards until killed.
    import sys
    import time

    listen_host, target_host, target_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    proxy = TcpProxy((target_host, target_port), host=listen_host)
    print(proxy.port, flush=True)
    while True:
        time.sleep(3600)
