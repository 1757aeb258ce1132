"""A TCP forwarder in front of a real server, to give it faults: unreachable, answering
errors itself, or slow (:class:`TcpProxy`)."""

from __future__ import annotations

import socket
import threading
import time

from servers import free_port


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 in front of a real server; :meth:`cut` closes every
    connection and refuses new ones (the server unreachable), :meth:`restore` lets them in.
    :attr:`received` counts the bytes the server sent back through it. :meth:`fail` answers
    every new request with an HTTP error itself (the server overloaded), :meth:`slow` delays
    what the server sends back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.received = 0
        self._failing: str | None = None
        self._delay_s = 0.0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            if self._failing is not None:
                threading.Thread(
                    target=self._answer, args=(client, self._failing), daemon=True
                ).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b, back in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(a, b, back), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, back: bool) -> None:
        try:
            while data := src.recv(65536):
                if back:
                    with self._lock:
                        self.received += len(data)
                    if self._delay_s:
                        time.sleep(self._delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    @staticmethod
    def _answer(client: socket.socket, status: str) -> None:
        """Read a request's head and answer it with ``status`` and an S3 error body."""
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            f"<Message>injected: {status}</Message></Error>"
        ).encode()
        try:
            client.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(65536)
                if not chunk:
                    break
                head += chunk
            client.sendall(
                f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        except OSError:
            pass
        finally:
            client.close()

    def fail(self, status: str = "503 Slow Down") -> None:
        """Close every connection and answer each new request with ``status`` (an S3
        ``SlowDown`` error body), as an overloaded or failing server does."""
        self.cut()
        self._failing = status
        self._open.set()

    def slow(self, delay_s: float) -> None:
        """Hold every chunk the server sends back for ``delay_s`` first."""
        self._delay_s = delay_s

    def restore(self) -> None:
        self._failing = None
        self._delay_s = 0.0
        self._open.set()

    def close(self) -> None:
        self.cut()
        self._server.close()
