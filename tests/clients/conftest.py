"""Fixtures of the client tests: real fsrst_server processes on free ports, and
the Python client (clients/python) importable as fsrst_client."""

import os
import sys

import pytest

from server_process import ROOT, start_small_server

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))


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
