"""The Python client against a real fsrst_server: round trip, transparent
re-registration after a restart and after server-side deletion, the CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from server_process import ROOT, ServerProcess, small_model

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
from fsrst_client import FsrstClient, FsrstError  # noqa: E402
from fsrst_client._stubs import fsrst_pb2, fsrst_pb2_grpc  # noqa: E402

RNG = np.random.default_rng(11)
REFS = [RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(3)]
FRAMES = [RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]


@pytest.fixture()
def server():
    s = ServerProcess(small_model(), "--model_threads=1")
    yield s
    s.stop()


def test_round_trip_and_server_info(server):
    with FsrstClient(f"127.0.0.1:{server.port}") as client:
        assert client.health() == "SERVING"
        assert client.server_info().lr_size == 32
        response = client.register_references("ann", REFS)
        assert response.reference_count == 3
        out = client.enhance("ann", FRAMES[0])
        assert out.shape == (128, 128, 3) and out.dtype == np.uint8
        jpeg = client.enhance("ann", FRAMES[0], output="jpeg")
        assert jpeg.shape == (128, 128, 3)
        assert np.abs(jpeg.astype(int) - out.astype(int)).mean() < 8
        streamed = list(client.enhance_stream("ann", FRAMES))
        assert len(streamed) == 4
        assert np.array_equal(streamed[0], out)
        with pytest.raises(FsrstError) as error:
            client.enhance("never-registered", FRAMES[0])
        assert error.value.code.name == "NOT_FOUND"


def test_reregisters_transparently_after_a_server_restart():
    first = ServerProcess(small_model(), "--model_threads=1")
    port = first.port
    client = FsrstClient(f"127.0.0.1:{port}")
    client.register_references("bea", REFS)
    before = client.enhance("bea", FRAMES[1])
    first.stop()
    second = ServerProcess(small_model(), "--model_threads=1", f"--port={port}")
    try:
        # The new server has never seen "bea": the client registers again by itself.
        after = client.enhance("bea", FRAMES[1])
    finally:
        second.stop()
        client.close()
    assert np.array_equal(before, after)


def test_stream_reregisters_after_server_side_deletion(server):
    with FsrstClient(f"127.0.0.1:{server.port}") as client:
        client.register_references("cid", REFS)
        expected = [client.enhance("cid", f) for f in FRAMES]
        # Another party (eviction, another replica) loses the identity on the server.
        import grpc
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            fsrst_pb2_grpc.FaceSuperResolutionStub(channel).DeleteReferences(
                fsrst_pb2.DeleteReferencesRequest(identity_id="cid"), timeout=10)
        streamed = list(client.enhance_stream("cid", FRAMES))
    for got, want in zip(streamed, expected):
        assert np.array_equal(got, want)


def test_cli_writes_the_face_and_a_side_by_side(server, tmp_path):
    frame = tmp_path / "lr.png"
    Image.fromarray(FRAMES[2]).save(frame)
    refs = []
    for i, r in enumerate(REFS):
        refs += ["--ref", str(tmp_path / f"ref{i}.png")]
        Image.fromarray(r).save(tmp_path / f"ref{i}.png")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "clients", "python"))
    result = subprocess.run(
        ["/usr/bin/python3", "-m", "fsrst_client", "enhance", f"--server=127.0.0.1:{server.port}",
         f"--frame={frame}", *refs, f"--out={tmp_path / 'out.png'}",
         f"--side_by_side={tmp_path / 'sbs.png'}"], capture_output=True, text=True, env=env,
        timeout=120)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out.png").size == (128, 128)
    assert Image.open(tmp_path / "sbs.png").size == (128 * 6, 128 + 16)
    bad = subprocess.run(["/usr/bin/python3", "-m", "fsrst_client", "enhance",
                          f"--server=127.0.0.1:{server.port}", f"--frame={tmp_path / 'sbs.png'}",
                          f"--out={tmp_path / 'x.png'}"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr and "expected 32x32" in bad.stderr
