"""A TCP proxy on 127.0.0.1 a test can cut: ``outage()`` drops every connection and refuses new ones
(the port is closed), ``resume()`` listens again on the same port. What a client sees of a PostgreSQL
restart or a network partition, without touching the shared server."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

from psycopg import conninfo

from tests.support.pgserver import as_uri

BUFFER = 65536


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self.port = 0
        self.accepted = 0
        self._thread: threading.Thread | None = None

    @classmethod
    def to_dsn(cls, dsn: str) -> Proxy:
        params: dict[str, Any] = conninfo.conninfo_to_dict(dsn)
        host = params.get("host") or "127.0.0.1"
        if host.startswith("/"):  # a Unix-socket server (the embedded PostgreSQL): forward to its socket file
            return cls(host, int(params.get("port") or 5432))
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the proxy only forwards to a loopback server, not {host!r}")
        return cls("127.0.0.1", int(params.get("port") or 5432))

    def _connect_upstream(self) -> socket.socket:
        host, port = self.target
        if host.startswith("/"):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.settimeout(5)
            upstream.connect(f"{host}/.s.PGSQL.{port}")
            return upstream
        return socket.create_connection(self.target, timeout=5)

    def dsn(self, dsn: str) -> str:
        """``dsn`` with host and port pointing at the proxy."""
        params: dict[str, Any] = conninfo.conninfo_to_dict(dsn)
        params["host"], params["port"] = "127.0.0.1", str(self.port)
        return as_uri(conninfo.make_conninfo(**params))

    # --- control ------------------------------------------------------------------------------

    def start(self) -> Proxy:
        self._listen()
        return self

    def outage(self) -> None:
        """Refuse new connections and drop every open one (both directions reset)."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for s in conns:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with contextlib.suppress(OSError):
                s.close()

    def resume(self) -> None:
        self._listen()

    def close(self) -> None:
        self._stop.set()
        self.outage()

    @contextlib.contextmanager
    def running(self) -> Iterator[Proxy]:
        self.start()
        try:
            yield self
        finally:
            self.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True)
        self._thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), name="proxy-pump", daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        """Copy both ways until either side closes (bounded by the sockets' lives: outage() closes them)."""
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.5)
                for s in readable:
                    data = s.recv(BUFFER)
                    if not data:
                        return
                    peers[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._conns = [s for s in self._conns if s not in (a, b)]
