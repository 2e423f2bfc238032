"""Fixtures that run the real fsrst_server binary and talk to it over gRPC."""

import os

import pytest

from server_process import ROOT, SERVER_BIN, ServerProcess, small_model  # noqa: F401


@pytest.fixture(scope="module")
def server():
    if not os.path.exists(SERVER_BIN):
        pytest.fail(f"{SERVER_BIN} is not built; run the test command from README.md")
    s = ServerProcess(small_model(), "--model_threads=1")
    yield s
    s.stop()
