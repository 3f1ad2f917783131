import gc
import os

import pytest

from usersd_harness import Server


def pytest_addoption(parser):
    parser.addoption("--store", choices=["sqlite", "mongodb"], default="sqlite",
                     help="store the servers under test use; mongodb starts a FerretDB for the session")


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: the test inspects or breaks the SQLite file itself")
    config.addinivalue_line(
        "markers",
        "atomic_conditional_update: races conditional writes; FerretDB 1.x runs a filtered update as a read, then "
        "a write (internal/handler/msg_update.go), so the race is only meaningful on SQLite here (MongoDB itself "
        "applies a filtered update to a document atomically)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--store") != "mongodb":
        return
    # Deselected, not skipped: these tests are about the SQLite file and run in the SQLite pass.
    kept = [item for item in items
            if item.get_closest_marker("sqlite_only") is None
            and item.get_closest_marker("atomic_conditional_update") is None]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def store_backend(request, tmp_path_factory):
    """With --store=mongodb, one FerretDB serves the whole session; each usersd gets its own database."""
    if request.config.getoption("--store") != "mongodb":
        yield None
        return
    from ferretdb import FerretDB
    ferret = FerretDB(tmp_path_factory.mktemp("ferretdb")).start()
    os.environ["USERSD_TEST_STORE"] = "mongodb"
    os.environ["USERSD_TEST_MONGODB_URL"] = ferret.url
    yield ferret
    ferret.stop()


@pytest.fixture
def server(tmp_path):
    """A fresh usersd on its own port and store; stopped (SIGTERM) after the test."""
    srv = Server(tmp_path).start()
    yield srv
    gc.collect()  # release keep-alive sockets held by lingering response objects, so the stop is prompt
    srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One usersd per test module, for read-mostly tests that do not need a clean store."""
    srv = Server(tmp_path_factory.mktemp("usersd")).start()
    yield srv
    gc.collect()
    srv.stop()
