import pytest

from usersd_harness import Server


@pytest.fixture
def server(tmp_path):
    """A fresh usersd on its own port and SQLite file; stopped (SIGTERM) after the test."""
    srv = Server(tmp_path).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One usersd per test module, for read-mostly tests that do not need a clean store."""
    srv = Server(tmp_path_factory.mktemp("usersd")).start()
    yield srv
    srv.stop()
