"""Fixtures of the client tests: real fsrst_server processes on free ports, and
the Python client (clients/python) importable as fsrst_client."""

import os
import sys

import pytest

from server_process import ROOT, SERVER_BIN, ServerProcess, small_model

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))


def start_small_server(*flags: str) -> ServerProcess:
    """fsrst_server with fsrst_x4_small on one model thread, on free ports."""
    if not os.path.exists(SERVER_BIN):
        pytest.fail(f"{SERVER_BIN} is not built; run the test command from README.md")
    return ServerProcess(small_model(), "--model_threads=1", *flags)


@pytest.fixture
def start_server():
    """start_server(*flags) -> a started ServerProcess, stopped after the test."""
    started = []

    def start(*flags):
        started.append(start_small_server(*flags))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def fsrst_server():
    """One fsrst_server shared by a module's tests (count metrics as differences)."""
    server = start_small_server()
    yield server
    server.stop()
