"""Reload, scale and max_requests recycling under steady keep-alive load (wrk): not one failed request.

wrk is required (`make deps` installs it); without it these tests fail, they do not skip.
"""
import re
import time
import uuid

from supervisor_helpers import (health, http_request, parse_wrk, print_rss, sleep_until, start_wrk, supervisors,
                                wrk_binary)  # noqa: F401 - fixture

PASSWORD = "correct horse battery"
DURATION = 8


def bearer_script(sup):
    """A wrk script for GET /v1/users/me as a freshly registered user (JWT check + a store read per request)."""
    email = f"load{uuid.uuid4().hex[:12]}@example.com"
    r = http_request(sup.port, "POST", "/v1/auth/register",
                     {"email": email, "password": PASSWORD, "firstName": "Load", "lastName": "Test"})
    assert r.status == 201, r
    r = http_request(sup.port, "POST", "/v1/auth/login", {"email": email, "password": PASSWORD})
    assert r.status == 200, r
    token = r.json()["token"]
    assert http_request(sup.port, "GET", "/v1/users/me", headers={"Authorization": f"Bearer {token}"}).status == 200
    script = sup.tmp / "me.lua"
    script.write_text(f'wrk.method = "GET"\nwrk.headers["Authorization"] = "Bearer {token}"\n')
    return script


def finish(wrk, label):
    out, _ = wrk.communicate(timeout=DURATION + 30)
    result = parse_wrk(out)
    print(f"{label}: {result['requests']} requests, {result['rps']:.0f} req/s, p99 {result['p99']}, "
          f"socket errors {result['socket_errors']}, non-2xx {result['non_2xx']}")
    return out, result


def assert_clean(sup, out, result):
    assert result["requests"] > 0, out
    if not wrk_ok(result):
        migrate = sup.status()["supervisor"]["tcp_migrate_req"]
        raise AssertionError(
            f"wrk reported failed requests (net.ipv4.tcp_migrate_req={migrate}; with 0 the kernel resets connections "
            f"queued on a retiring worker's own SO_REUSEPORT listener when it closes):\n{out}\n"
            f"{sup.known_bug_hint()}")


def wrk_ok(result):
    errors = result["socket_errors"]
    return (errors is None or not any(errors.values())) and result["non_2xx"] in (None, 0)


# --- 15. reload --------------------------------------------------------------------------------------------

def test_two_reloads_under_load_fail_no_request(supervisors):
    wrk_binary()
    sup = supervisors(config={"workers": 2}).start()
    st = sup.wait_online(2)
    before = set(sup.worker_pids(st))
    script = bearer_script(sup)

    t0 = time.monotonic()
    wrk = start_wrk(sup.port, "/v1/users/me", DURATION, script=script)
    reloads = []
    try:
        for at in (2, 5):
            sleep_until(t0 + at)
            done = sup.ctl("reload")
            assert done.returncode == 0, done.stderr
            m = re.search(r"reloaded 2 workers in (\d+) ms", done.stdout)
            assert m, done.stdout
            reloads.append(int(m[1]))
    finally:
        out, result = finish(wrk, "GET /v1/users/me, 2 reloads")
    print(f"reload durations under load: {reloads} ms")
    assert_clean(sup, out, result)
    st = sup.wait_online(2)
    after = set(sup.worker_pids(st))
    assert not after & before, f"workers not replaced: before {before}, after {after}"
    assert sup.log().count("reload finished") == 2
    assert health(sup.port).status == 200


# --- 16. scale ---------------------------------------------------------------------------------------------

def test_scale_up_and_down_under_load_fails_no_request(supervisors):
    wrk_binary()
    sup = supervisors(config={"workers": 2}).start()
    st = sup.wait_online(2)
    before = sup.worker_pids(st)

    t0 = time.monotonic()
    wrk = start_wrk(sup.port, "/healthcheck", DURATION)
    timings = {}
    try:
        for at, change in ((2, "+1"), (5, "-1")):
            sleep_until(t0 + at)
            t = time.monotonic()
            done = sup.ctl("scale", change)
            timings[change] = round((time.monotonic() - t) * 1000)
            assert done.returncode == 0, done.stderr
    finally:
        out, result = finish(wrk, "GET /healthcheck, scale +1 then -1")
    print(f"scale durations under load (ms): {timings}")
    assert_clean(sup, out, result)
    st = sup.wait_online(2)
    assert sup.worker_pids(st) == before  # the added slot was the one removed
    assert "scaling down" in sup.log()


# --- 17. max_requests recycling ------------------------------------------------------------------------------

def test_max_requests_recycling_under_load_fails_no_request(supervisors):
    wrk_binary()
    sup = supervisors(config={"workers": 2, "max_requests": 2000}).start()
    st = sup.wait_online(2)
    before = set(sup.worker_pids(st))

    wrk = start_wrk(sup.port, "/healthcheck", DURATION)
    out, result = finish(wrk, "GET /healthcheck, max_requests 2000")
    recycles = sup.log().count("(max_requests)")
    print(f"max_requests recycles during the run: {recycles}")
    assert_clean(sup, out, result)
    assert result["requests"] > 4 * 2000, "not enough load to recycle the workers"
    assert recycles >= 2, sup.log()[-3000:]
    st = sup.wait_online(2, timeout=30)
    assert not set(sup.worker_pids(st)) & before
    print_rss(sup, "after the recycling run")
