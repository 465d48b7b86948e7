"""The /metrics HTTP(S) server: client_python's WSGI app behind optional basic auth and TLS.

Connections live on one asyncio loop in a background thread, so an idle, stalled or half-open
one costs a file descriptor, not a thread: at most MAX_CONNECTIONS at once (the oldest one still
waiting for its request makes room for a new one), a listen backlog of BACKLOG, a time limit on
the TLS handshake, on each request head and on each response, and requests answered by a pool
of WORKERS threads. Whatever a client sends ends, at worst, its own connection: counted in
zctrace_http_client_errors_total{kind} and logged as one line per kind at most once a minute.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import logging
import os
import socket
import ssl
import stat
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator
from urllib.parse import unquote

from prometheus_client import make_wsgi_app
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..errors import ZctraceError
from .ratelog import RateLimitedLog

DEFAULT_LISTEN = "127.0.0.1:9435"
MAX_CONNECTIONS = 256
BACKLOG = 128
WORKERS = 4
HANDSHAKE_SECONDS = 5.0  # TLS handshake
REQUEST_SECONDS = 10.0   # a request head, from the connection (or the request's first byte) on
KEEPALIVE_SECONDS = 120.0  # an idle keep-alive connection, between requests (then closed quietly)
RESPONSE_SECONDS = 30.0  # the client reading the response
MAX_HEAD = 16384         # bytes of request line and headers
# What a client can do wrong, as zctrace_http_client_errors_total{kind} counts it.
CLIENT_ERRORS = ("tls_handshake", "timeout", "bad_request", "disconnect", "too_many_connections")
log = logging.getLogger("zctrace.exporter")
_INDEX = (b"<html><head><title>zctrace exporter</title></head><body><h1>zctrace exporter</h1>"
          b'<p><a href="/metrics">Metrics</a></p></body></html>')


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[V6ADDR]:PORT' -> (host, port); ':PORT' is every IPv4 address (0.0.0.0)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ZctraceError(f"--listen wants HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


def read_basic_auth(path: str) -> dict[str, str]:
    """'user:password' lines ('#' comments and blank lines ignored). Like sshd with a private key,
    a file that group or others may read or write is refused."""
    try:
        with open(path) as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o077:
                raise ZctraceError(f"the basic auth file {path} is open to group or others (mode "
                                   f"{stat.S_IMODE(mode):04o}): chmod 600 {path}")
            lines = [line.strip() for line in f]
    except OSError as e:
        raise ZctraceError(f"cannot read the basic auth file {path}: {e.strerror}") from None
    users = {}
    for n, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ZctraceError(f"{path}:{n}: expected user:password")
        users[user] = password
    if not users:
        raise ZctraceError(f"{path}: no user:password line")
    return users


def _authorized(header: str, users: dict[str, str]) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    expected = users.get(user, "")
    # Compare even for unknown users, so timing does not tell which users exist.
    return hmac.compare_digest(password.encode(), expected.encode()) and user in users


def _app(registry: CollectorRegistry, users: dict[str, str] | None) -> Callable:
    metrics = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if users is not None and not _authorized(environ.get("HTTP_AUTHORIZATION", ""), users):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="zctrace"'),
                                                ("Content-Type", "text/plain")])
            return [b"Unauthorized\n"]
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            # client_python answers HEAD with 405: render as for GET (the server sends no body).
            if environ.get("REQUEST_METHOD") == "HEAD":
                environ = dict(environ, REQUEST_METHOD="GET")
            return metrics(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html")])
            return [_INDEX]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found: try /metrics\n"]

    return app


@dataclass
class TlsFiles:
    cert: str
    key: str


class ClientError(Exception):
    """A request this server will not serve: answered with `status`, then the connection closes."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]

    @classmethod
    def parse(cls, head: bytes) -> Request:
        """The request line and headers (a request with a body is refused: /metrics has none)."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[1].startswith("/"):
            raise ClientError("400 Bad Request", f"bad request line {ascii(lines[0][:60])}")
        headers = {}
        for line in filter(None, lines[1:]):
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ClientError("400 Bad Request", f"bad header line {ascii(line[:60])}")
            headers[name.lower()] = value.strip()
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            raise ClientError("413 Content Too Large", "a request with a body")
        return cls(*parts, headers)

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        return connection == "keep-alive" if self.version == "HTTP/1.0" else connection != "close"

    def environ(self, server: tuple[str, int], peer: tuple, scheme: str) -> dict:
        path, _, query = self.target.partition("?")
        environ = {"REQUEST_METHOD": self.method, "SCRIPT_NAME": "", "PATH_INFO": unquote(path, "latin-1"),
                   "QUERY_STRING": query, "SERVER_NAME": str(server[0]), "SERVER_PORT": str(server[1]),
                   "SERVER_PROTOCOL": self.version, "REMOTE_ADDR": str(peer[0]) if peer else "",
                   "wsgi.version": (1, 0), "wsgi.url_scheme": scheme, "wsgi.input": io.BytesIO(),
                   "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
                   "wsgi.run_once": False}
        for name, value in self.headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        return environ


def _call(app: Callable, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run a WSGI app to the end: (status, headers, body)."""
    started: list = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: started.extend((status, headers))))
    return started[0], started[1], body


class _ClientErrors(Collector):
    def __init__(self, counts: dict[str, int]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily("zctrace_http_client_errors",
                                  "Connections to the exporter that ended in a client error: tls_handshake "
                                  "(failed or too slow, plain HTTP on the TLS port), timeout (no whole request "
                                  "head, or response not read, in time), bad_request (not HTTP the exporter "
                                  "serves), disconnect (closed mid-request), too_many_connections (closed "
                                  "while waiting for its request to make room for a new one).", labels=["kind"])
        for kind in CLIENT_ERRORS:
            fam.add_metric([kind], self._counts[kind])
        yield fam


class MetricsServer:
    """Serves `registry` on (host, port) from a background thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, tls: TlsFiles | None = None,
                 users: dict[str, str] | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        except OSError as e:
            raise ZctraceError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        self._ssl: ssl.SSLContext | None = None
        if tls is not None:
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                self._ssl.load_cert_chain(tls.cert, tls.key)
            except (OSError, ssl.SSLError) as e:
                self._sock.close()
                raise ZctraceError(f"cannot load the TLS certificate {tls.cert} / key {tls.key}: {e}") from None
        self.address = self._sock.getsockname()[:2]
        self.client_errors = dict.fromkeys(CLIENT_ERRORS, 0)
        registry.register(_ClientErrors(self.client_errors))
        self._app = _app(registry, users)
        self._log = RateLimitedLog(log)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="zctrace-http")
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_error)
        self._connections: dict[asyncio.Task, bool] = {}  # in arrival order -> serving a request now
        self._evicted: set[asyncio.Task] = set()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                                        name="zctrace-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def stop(self) -> None:
        """Stop serving: close the listening socket and every connection."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join()
        self._pool.shutdown(wait=True)
        self.close()

    def close(self) -> None:
        """Release the listening socket (started or not)."""
        self._sock.close()
        if not self._thread.is_alive():
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._sock, limit=MAX_HEAD)
        self._started.set()
        await self._stopping.wait()
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _client_error(self, kind: str, peer: object, detail: object) -> None:
        self.client_errors[kind] += 1
        self._log.warning(kind, f"http: client {_peer(peer)}: {kind}: {detail}")

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """Whatever asyncio would log with a traceback: one line, at most once a minute."""
        self._log.warning("loop", f"http: {context.get('message')}: {context.get('exception')!r}")

    def _make_room(self, peer: object) -> bool:
        """Below MAX_CONNECTIONS after closing the oldest connection that waits for its request?"""
        if len(self._connections) < MAX_CONNECTIONS:
            return True
        oldest = next((task for task, busy in self._connections.items() if not busy), None)
        if oldest is None:
            self._client_error("too_many_connections", peer, f"{MAX_CONNECTIONS} busy, this one closed")
            return False
        self._evicted.add(oldest)
        oldest.cancel()
        del self._connections[oldest]
        return True

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task, peer = asyncio.current_task(), writer.get_extra_info("peername")
        if not self._make_room(peer):
            writer.transport.abort()
            return
        self._connections[task] = False
        phase = "tls_handshake" if self._ssl else "timeout"
        try:
            if self._ssl is not None:
                await writer.start_tls(self._ssl, ssl_handshake_timeout=HANDSHAKE_SECONDS)
            phase, served = "request", 0
            while await self._exchange(task, reader, writer, served):
                served += 1
        except asyncio.CancelledError:
            if task in self._evicted:
                self._evicted.discard(task)
                self._client_error("too_many_connections", peer, f"{MAX_CONNECTIONS} open, the oldest idle closed")
            else:
                raise
        except (TimeoutError, asyncio.TimeoutError):
            self._client_error("timeout" if phase == "request" else "tls_handshake", peer,
                               "no whole request in time" if phase == "request" else "handshake too slow")
        except asyncio.IncompleteReadError as e:
            if e.partial:
                self._client_error("disconnect", peer, f"closed after {len(e.partial)} bytes of a request")
        except asyncio.LimitOverrunError:
            self._client_error("bad_request", peer, f"request head over {MAX_HEAD} bytes")
        except (OSError, ssl.SSLError) as e:
            self._client_error("tls_handshake" if phase == "tls_handshake" else "disconnect", peer,
                               f"{type(e).__name__}: {e}".rstrip(": "))
        finally:
            self._connections.pop(task, None)
            writer.transport.abort()

    async def _exchange(self, task: asyncio.Task, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, served: int) -> bool:
        """Serve one request; whether the connection stays open for another. After the first,
        a connection may idle up to KEEPALIVE_SECONDS (a scrape interval) before its next."""
        first = b""
        if served:
            try:
                first = await asyncio.wait_for(reader.readexactly(1), KEEPALIVE_SECONDS)
            except (TimeoutError, asyncio.IncompleteReadError):
                return False  # the client is done with it: no error
        head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_SECONDS)
        self._connections[task] = True
        try:
            request = Request.parse(head)
        except ClientError as e:
            self._client_error("bad_request", writer.get_extra_info("peername"), e)
            writer.write(f"HTTP/1.1 {e.status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await asyncio.wait_for(writer.drain(), RESPONSE_SECONDS)
            return False
        environ = request.environ(self.address, writer.get_extra_info("peername"), "https" if self._ssl else "http")
        status, headers, body = await asyncio.get_running_loop().run_in_executor(self._pool, _call, self._app, environ)
        keep = request.keep_alive
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers if k.lower() != "content-length"),
                 f"Content-Length: {len(body)}", f"Connection: {'keep-alive' if keep else 'close'}", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + (body if request.method != "HEAD" else b""))
        await asyncio.wait_for(writer.drain(), RESPONSE_SECONDS)
        self._connections[task] = False
        return keep


def _peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
    return "?"
