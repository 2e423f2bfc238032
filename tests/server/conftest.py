"""Fixtures that run the real fsrst_server binary and talk to it over gRPC."""

import grpc
import pytest

from server_process import start_small_server
import fsrst_pb2_grpc


@pytest.fixture(scope="module")
def server():
    """fsrst_x4_small on one model thread, shared by a module's tests (a module needing other
    flags overrides this fixture, starting its server with start_small_server(flags))."""
    s = start_small_server()
    yield s
    s.stop()


@pytest.fixture()
def stub(server):
    """A FaceSuperResolution stub on its own channel to `server` (a module may override it)."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
