"""Slow and greedy clients: request heads and bodies within their timeouts, header floods, the per-address
connection cap, and slowloris connections that must not stop other clients from being served.

Attackers connect from other loopback addresses (127.0.0.2...; all of 127/8 is loopback on Linux) so the
per-address cap applies to them and not to the well-behaved client on 127.0.0.1.
"""
import socket
import threading
import time

import requests

from supervisor_helpers import read_response, supervisors  # noqa: F401 - fixture
from usersd_harness import assert_problem

HANG_BOUND = 20  # seconds: far beyond every timeout configured here; only catches a hang


def connect(port, source="127.0.0.1", timeout=HANG_BOUND):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    sock.settimeout(timeout)
    return sock


def start(supervisors, **config):
    sup = supervisors(config={"workers": 1, **config}).start()
    sup.wait_online(n=1)
    return sup


def problem_of(response, status):
    assert response.status == status, response
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status
    return body


def closed_by_server(sock):
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return False


class Trickler:
    """Keeps connections alive the slowloris way: one more header byte every `every` seconds."""

    def __init__(self, socks, every=0.5):
        self.socks, self.every, self.stop = socks, every, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.wait(self.every):
            for s in list(self.socks):
                try:
                    s.send(b"X")
                except OSError:
                    self.socks.remove(s)

    def __enter__(self):
        for s in self.socks:
            s.send(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def test_headers_that_trickle_past_header_timeout_get_408(supervisors):
    sup = start(supervisors, http={"header_timeout": 2, "read_timeout": 30})
    sock = connect(sup.port)
    started = time.monotonic()
    with Trickler([sock], every=0.3):
        response = read_response(sock, timeout=HANG_BOUND)
    problem_of(response, 408)
    assert time.monotonic() - started < HANG_BOUND


def test_a_connection_that_never_sends_is_closed_after_header_timeout(supervisors):
    sup = start(supervisors, http={"header_timeout": 2})
    sock = connect(sup.port)
    assert closed_by_server(sock)  # within HANG_BOUND, not keep_alive_timeout (75 s)
    sock.close()


def test_a_body_that_trickles_past_body_timeout_is_cut_off(supervisors):
    sup = start(supervisors, http={"body_timeout": 2, "read_timeout": 30})
    sock = connect(sup.port)
    sock.send(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n{\"email\": \"")
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.3):
            try:
                sock.send(b"a")
            except OSError:
                return
    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        response = read_response(sock, timeout=HANG_BOUND)
    finally:
        stop.set()
        t.join()
    problem_of(response, 400)
    assert response.headers.get("connection") == "close"
    sock.close()


def test_too_many_header_lines_get_431(supervisors):
    sup = start(supervisors, http={"max_header_count": 20})
    sock = connect(sup.port)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(21))
    sock.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    problem_of(read_response(sock), 431)
    sock.close()
    ok = requests.get(sup.url("/healthcheck"), headers={f"X-H{i}": "v" for i in range(15)}, timeout=HANG_BOUND)
    assert ok.status_code == 200


def test_headers_larger_than_max_header_bytes_get_431(supervisors):
    sup = start(supervisors)  # default 16 KiB; each line stays under httplib's own 8 KiB line limit
    r = requests.get(sup.url("/healthcheck"), headers={f"X-Big{i}": "v" * 6000 for i in range(3)},
                     timeout=HANG_BOUND)
    assert_problem(r, 431)
    assert requests.get(sup.url("/healthcheck"), headers={"X-Big": "v" * 6000}, timeout=HANG_BOUND).status_code == 200


def test_connections_beyond_the_per_address_cap_are_refused_with_429(supervisors):
    sup = start(supervisors, http={"max_connections_per_client": 3})
    held = [connect(sup.port, "127.0.0.2") for _ in range(3)]
    with Trickler(held):
        time.sleep(0.3)  # the server has taken all three
        for _ in range(4):  # a refusal must not free a place for the next one
            extra = connect(sup.port, "127.0.0.2")
            body = problem_of(read_response(extra), 429)
            assert "connections" in body["detail"]
            extra.close()
        # Other addresses are not affected.
        assert requests.get(sup.url("/healthcheck"), timeout=HANG_BOUND).status_code == 200


def test_a_slowloris_attack_does_not_stop_other_clients(supervisors):
    # A small pool makes the point with few connections: 8 threads, at most 4 per address.
    sup = start(supervisors, http={"threads": 8, "max_connections_per_client": 4, "header_timeout": 5})
    trickling = [connect(sup.port, "127.0.0.2") for _ in range(16)]  # most are refused by the cap
    trickling += [connect(sup.port, f"127.0.1.{1 + i}") for i in range(16)]  # a botnet: one each, uncapped
    idle = [connect(sup.port, f"127.0.0.{3 + i // 4}") for i in range(24)]  # idle, from six addresses
    with Trickler(trickling):
        for _ in range(5):
            r = requests.get(sup.url("/healthcheck"), headers={"Connection": "close"}, timeout=HANG_BOUND)
            assert r.status_code == 200
            time.sleep(0.2)
    for s in idle:
        s.close()
