"""Slow clients: a connection whose request headers do not arrive in time is closed
(sbirkit.serve.header_timeout, the protocol `sbirkit serve` gives uvicorn); normal and keep-alive
requests are not affected. A real uvicorn server on a free port, a one-route ASGI app."""

from __future__ import annotations

import socket
import threading
import time

import pytest

uvicorn = pytest.importorskip("uvicorn")

from sbirkit.serve.header_timeout import HeaderTimeoutHTTPProtocol  # noqa: E402

TIMEOUT = 0.6


class FastDeadline(HeaderTimeoutHTTPProtocol):
    header_timeout = TIMEOUT


async def tiny_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(tiny_app, http=FastDeadline, log_level="warning", timeout_keep_alive=30, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(5)


def _closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        return s.recv(100) == b""
    except socket.timeout:
        return False


def test_a_client_that_sends_nothing_is_disconnected(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        t = time.perf_counter()
        assert _closed_within(s, 5 * TIMEOUT + 2)
        assert time.perf_counter() - t >= TIMEOUT * 0.9


def test_headers_sent_a_byte_at_a_time_are_cut_off(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.perf_counter()
        closed = False
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)
            if time.perf_counter() - start > 6 * TIMEOUT:
                break
        assert closed or _closed_within(s, 2)


def test_prompt_requests_and_keep_alive_are_served(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        for _ in range(2):  # two requests on one connection
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"ok"):
                data += s.recv(1000)
            assert data.startswith(b"HTTP/1.1 200")
            time.sleep(TIMEOUT * 0.5)
        # idle after the last response: the deadline closes it (the keep-alive timeout is 30 s here)
        assert _closed_within(s, 5 * TIMEOUT + 2)
