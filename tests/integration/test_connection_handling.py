"""Keep-alive connections stay in sync: a refused request's unread body never becomes 'the next request'."""
import re
import socket
import time

import pytest


def _exchange(port, raw: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        time.sleep(0.3)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode(errors="replace")


def _status_lines(text):
    # A status line follows the previous body directly, with no line break of its own.
    return re.findall(r"HTTP/1\.1 \d{3} [A-Za-z ]+", text)


@pytest.mark.parametrize("first", [
    b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n\r\n{\"email\":\"x@y.z\"}",
    b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"PUT /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\nGET /nope HTTP/1.1\r\n\r\n!!",
], ids=["415", "404", "405", "GET with body"])
def test_unread_body_closes_the_connection_instead_of_desyncing(shared_server, first):
    second = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"
    text = _exchange(shared_server.port, first + second)
    statuses = _status_lines(text)
    # Either the server closed after the first response (it says so), or it answered the second request
    # properly; it must never parse leftover body bytes as a request (a 400 for a request nobody sent).
    assert statuses, text
    assert not any(" 400 " in s for s in statuses), text
    if len(statuses) == 1:
        assert "Connection: close" in text, text
    else:
        assert statuses[1].startswith("HTTP/1.1 200 "), text


def test_pipelined_requests_with_read_bodies_are_all_answered(shared_server):
    login = b'{"email":"nobody@example.com","password":"wrong password"}'
    one = (b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
           % len(login) + login)
    text = _exchange(shared_server.port, one + one + b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert [s.split(" ")[1] for s in _status_lines(text)] == ["401", "401", "200"], text
