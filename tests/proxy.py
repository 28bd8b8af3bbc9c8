"""A TCP forwarder a test can cut and restore, to take a real service away from a process
under test (a database that goes down) without stopping the service for everyone else."""

from __future__ import annotations

import contextlib
import socket
import threading

from sqlalchemy.engine import make_url

#: Where a service URL points when it names no port.
_DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379, "rediss": 6379}


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` (host and port, or a Unix socket's path);
    :meth:`cut` drops every connection and refuses new ones, :meth:`restore` accepts again on
    the same port."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.port = self._listen(0)

    @classmethod
    def before(cls, url: str) -> TcpProxy:
        """A proxy to the host and port of a service ``url`` (PostgreSQL or Redis)."""
        real = make_url(url)
        scheme = real.drivername.split("+", 1)[0]
        return cls((real.host or "127.0.0.1", real.port or _DEFAULT_PORTS[scheme]))

    def url(self, url: str) -> str:
        """``url`` pointed at this proxy instead of its service."""
        through = make_url(url).set(host="127.0.0.1", port=self.port)
        return through.render_as_string(hide_password=False)

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return int(listener.getsockname()[1])

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _connect(self) -> socket.socket:
        if isinstance(self.target, str):  # a Unix socket (an embedded Redis)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.settimeout(5)
            upstream.connect(self.target)
            upstream.settimeout(None)
            return upstream
        return socket.create_connection(self.target, timeout=5)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self._listen(self.port)

    def close(self) -> None:
        self.cut()
