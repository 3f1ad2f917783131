import requests


def test_healthcheck_ok(server):
    r = requests.get(server.url("/healthcheck"), timeout=5)
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["store"] == "ok"
