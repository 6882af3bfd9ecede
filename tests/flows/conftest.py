"""One Prefect test harness for every flow test (starting Prefect costs 13–26 s: pay it once)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "rtpcore")
# rtpcore tests later in this process log outside any flow run: nothing to send, no warning per line.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/flows/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.flow)


# Real rpcapd for the capture-session flow tests (built by scripts/build-rpcapd.sh).
from tests.rpcap.conftest import root, rpcapd, rpcapd_binary  # noqa: E402,F401
from tests.storage.conftest import moto_server  # noqa: E402,F401  (a real S3 endpoint for the S3 flow test)
