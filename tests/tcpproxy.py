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
    every new request with an HTTP error itself (the server overloaded), :meth:`refuse` only
    some requests of one method, :meth:`slow` delays what the server sends back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.received = 0
        self._failing: str | None = None
        self._refusals: tuple[str, str, str, int] | None = None  # method, status, code, count
        self.refused = 0  # requests :meth:`refuse` answered
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
            elif self._refusals is not None:
                threading.Thread(target=self._sort, args=(client,), daemon=True).start()
            else:
                self._forward(client, b"")

    def _forward(self, client: socket.socket, head: bytes) -> None:
        """Connect ``client`` to the server, ``head`` (what was read from it already) first."""
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            upstream.sendall(head)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns += [client, upstream]
        for a, b, back in ((client, upstream, False), (upstream, client, True)):
            threading.Thread(target=self._pipe, args=(a, b, back), daemon=True).start()

    def _sort(self, client: socket.socket) -> None:
        """Refuse the connection's first request if :meth:`refuse` still asks for it, else
        forward the connection (its later requests are not looked at)."""
        head = self._read_head(client)
        method = head.split(b" ", 1)[0].decode(errors="replace")
        with self._lock:
            rule = self._refusals
            if rule is not None and rule[0] == method and rule[3] > 0:
                self._refusals = (*rule[:3], rule[3] - 1)
                self.refused += 1
            else:
                rule = None
        if rule is None:
            self._forward(client, head)
        else:
            self._reply(client, rule[1], rule[2])

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
    def _read_head(client: socket.socket) -> bytes:
        """What the client sent up to the end of its first request's head."""
        head = b""
        try:
            client.settimeout(10)
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(65536)
                if not chunk:
                    break
                head += chunk
            client.settimeout(None)
        except OSError:
            pass
        return head

    @staticmethod
    def _reply(client: socket.socket, status: str, code: str) -> None:
        """Answer with ``status`` and an S3 error body of ``code``, and close the connection."""
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>injected: {status}</Message></Error>"
        ).encode()
        try:
            client.sendall(
                f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        except OSError:
            pass
        finally:
            client.close()

    def _answer(self, client: socket.socket, status: str) -> None:
        """Read a request's head and answer it with ``status`` (S3's ``SlowDown``)."""
        self._read_head(client)
        self._reply(client, status, "SlowDown")

    def fail(self, status: str = "503 Slow Down") -> None:
        """Close every connection and answer each new request with ``status`` (an S3
        ``SlowDown`` error body), as an overloaded or failing server does."""
        self.cut()
        self._failing = status
        self._open.set()

    def refuse(self, method: str, status: str, code: str, times: int) -> None:
        """Answer the next ``times`` requests of ``method`` that open a connection with
        ``status`` and the S3 error ``code`` (e.g. PUT, "409 Conflict",
        "ConditionalRequestConflict"), each connection closed after it; others reach the
        server."""
        self.cut()
        with self._lock:
            self._failing = None
            self._refusals = (method, status, code, times)
        self._open.set()

    def slow(self, delay_s: float) -> None:
        """Hold every chunk the server sends back for ``delay_s`` first."""
        self._delay_s = delay_s

    def restore(self) -> None:
        self._failing = None
        self._refusals = None
        self._delay_s = 0.0
        self._open.set()

    def close(self) -> None:
        self.cut()
        self._server.close()
