"""Fixtures that run the real fsrst_server binary and talk to it over gRPC."""

import os

import grpc
import pytest

from server_process import ROOT, SERVER_BIN, ServerProcess, small_model  # noqa: F401
import fsrst_pb2_grpc


@pytest.fixture(scope="module")
def server():
    if not os.path.exists(SERVER_BIN):
        pytest.fail(f"{SERVER_BIN} is not built; run the test command from README.md")
    s = ServerProcess(small_model(), "--model_threads=1")
    yield s
    s.stop()


@pytest.fixture()
def stub(server):
    """A FaceSuperResolution stub on its own channel to `server` (a module may override it)."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
