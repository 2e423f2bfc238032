"""The naive Python baseline speaks the same proto and computes the same faces."""

import os
import re
import subprocess
import time

import grpc
import numpy as np
import pytest

from server_process import ROOT, ServerProcess, small_model
import fsrst_pb2
import fsrst_pb2_grpc

NAIVE = os.path.join(ROOT, "clients", "baseline", "naive_server.py")


@pytest.fixture(scope="module")
def naive():
    proc = subprocess.Popen(["/usr/bin/python3", NAIVE, f"--model={small_model()}", "--port=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    match = re.search(r"serving on port (\d+)", line)
    assert match, line
    yield int(match.group(1))
    proc.terminate()
    proc.wait(timeout=30)


def rgb8(array):
    h, w, _ = array.shape
    return fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, data=array.tobytes(), width=w,
                           height=h)


def enhance(port, request):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = fsrst_pb2_grpc.FaceSuperResolutionStub(channel).Enhance(request, timeout=60)
    return np.frombuffer(response.image.data, np.uint8).astype(np.int16)


def test_naive_and_fsrst_server_compute_the_same_face(naive):
    rng = np.random.default_rng(3)
    request = fsrst_pb2.EnhanceRequest(
        frame=rgb8(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
        references=[rgb8(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)) for _ in range(3)])
    server = ServerProcess(small_model(), "--model_threads=1")
    try:
        ours = enhance(server.port, request)
    finally:
        server.stop()
    theirs = enhance(naive, request)
    assert ours.shape == theirs.shape == (128 * 128 * 3,)
    assert np.abs(ours - theirs).max() <= 1


def test_naive_registered_references_need_registration(naive):
    request = fsrst_pb2.EnhanceRequest(identity_id="nobody",
                                       frame=rgb8(np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(grpc.RpcError) as error:
        enhance(naive, request)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
