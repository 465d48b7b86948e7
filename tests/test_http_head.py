"""HEAD / and HEAD /metrics on a real `MetricsServer` over TCP: the GET's status and headers
(Content-Length included), and not one byte of body on the wire."""

from __future__ import annotations

import base64
import socket

import pytest
from prometheus_client import Counter
from prometheus_client.registry import CollectorRegistry

from zctrace.exporter.server import MetricsServer


def exchange(port: int, method: str, path: str, auth: str | None = None) -> tuple[str, dict[str, str], bytes]:
    """One request on a fresh connection (Connection: close): status line, headers, and every byte
    the server sent after the head until it closed."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if auth:
        head += f"Authorization: Basic {base64.b64encode(auth.encode()).decode()}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((head + "\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.fixture(params=[None, "prom:secret"], ids=["open", "basic_auth"])
def server(request):
    registry = CollectorRegistry()
    Counter("zctrace_head_test", "A fixed counter, so that GET and HEAD render the same", registry=registry).inc(3)
    users = {"prom": "secret"} if request.param else None
    srv = MetricsServer(registry, "127.0.0.1", 0, users=users)
    srv.start()
    try:
        yield srv.address[1], request.param
    finally:
        srv.stop()


@pytest.mark.parametrize("path", ["/metrics", "/"])
def test_head_has_the_get_headers_and_no_body(server, path):
    port, auth = server
    get_status, get_headers, get_body = exchange(port, "GET", path, auth)
    head_status, head_headers, head_body = exchange(port, "HEAD", path, auth)
    assert get_status == "HTTP/1.1 200 OK", get_status
    assert head_status == get_status, (head_status, head_body)
    assert head_body == b""
    assert head_headers == get_headers
    assert int(head_headers["content-length"]) == len(get_body) > 0
    if path == "/metrics":
        assert b"zctrace_head_test_total 3.0" in get_body
        assert head_headers["content-type"].startswith("text/plain")


def test_head_without_credentials_is_401_without_body():
    srv = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, users={"prom": "secret"})
    srv.start()
    try:
        status, headers, body = exchange(srv.address[1], "HEAD", "/metrics")
    finally:
        srv.stop()
    assert status == "HTTP/1.1 401 Unauthorized" and body == b""
    assert headers["www-authenticate"] == 'Basic realm="zctrace"'
