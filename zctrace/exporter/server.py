"""The /metrics HTTP(S) server: client_python's WSGI app behind optional basic auth and TLS,
one thread per request, served from a background thread until `stop()`."""

from __future__ import annotations

import base64
import hmac
import os
import socket
import ssl
import stat
import threading
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from ..errors import ZctraceError

DEFAULT_LISTEN = "127.0.0.1:9435"
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
            return metrics(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html")])
            return [_INDEX]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found: try /metrics\n"]

    return app


class _Handler(WSGIRequestHandler):
    timeout = 30  # a stalled client (or TLS handshake) gives up its thread

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        pass


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class TlsFiles:
    cert: str
    key: str


class MetricsServer:
    """Serves `registry` on (host, port) from a background thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, tls: TlsFiles | None = None,
                 users: dict[str, str] | None = None) -> None:
        server_class = type("Server", (_Server,), {
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self.httpd = make_server(host, port, _app(registry, users), server_class, handler_class=_Handler)
        except OSError as e:
            raise ZctraceError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_cert_chain(tls.cert, tls.key)
            except (OSError, ssl.SSLError) as e:
                self.httpd.server_close()
                raise ZctraceError(f"cannot load the TLS certificate {tls.cert} / key {tls.key}: {e}") from None
            # The handshake happens in the request's thread, not in accept().
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                                do_handshake_on_connect=False)
        self.address = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="zctrace-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()
