"""The naive Python baseline (clients/baseline/naive_server.py) speaks the same
proto as fsrst_server, with the same error codes, and computes the same faces
(within 1/255) from the same inputs."""

import os
import re
import subprocess
import sys

import grpc
import numpy as np
import pytest
from PIL import Image

from server_process import ROOT, small_model

from fsrst_client import FsrstClient, FsrstError
from fsrst_client._stubs import fsrst_pb2, fsrst_pb2_grpc

NAIVE = os.path.join(ROOT, "clients", "baseline", "naive_server.py")
RNG = np.random.default_rng(3)
FRAMES = [RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]


def photo(height, width):
    """Smooth, face-photo-like content (noise alone hides resampling mistakes)."""
    coarse = RNG.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


# Square and already 128; shrunk by an integer and a fractional factor; enlarged.
REFS = [photo(128, 128), photo(320, 256), photo(150, 200), photo(90, 100)]


@pytest.fixture(scope="module")
def naive():
    proc = subprocess.Popen([sys.executable, NAIVE, f"--model={small_model()}", "--port=0",
                             "--threads=1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    line = proc.stdout.readline()
    match = re.fullmatch(r"naive_server: serving on port (\d+)\n", line)
    if not match:
        proc.kill()
        pytest.fail(f"naive_server did not start: {line}{proc.stdout.read()}")
    client = FsrstClient(f"127.0.0.1:{match.group(1)}", timeout_s=30)
    yield client
    client.close()
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ours(fsrst_server):
    with FsrstClient(f"127.0.0.1:{fsrst_server.port}", timeout_s=30) as client:
        yield client


def assert_same_face(a, b):
    """Within 1/255 everywhere, and exactly equal almost everywhere: float noise
    moves a value or two; a different reference normalisation (say PIL's bicubic)
    moves thousands by 1 to 3."""
    assert a.shape == b.shape == (128, 128, 3)
    difference = np.abs(a.astype(int) - b.astype(int))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) < difference.size // 100


def test_same_face_as_fsrst_server_with_inline_references(naive, ours):
    frame = FRAMES[0]
    for reference in REFS:  # one at a time: each normalisation path on its own
        assert_same_face(ours.enhance("", frame, references=[reference]),
                         naive.enhance("", frame, references=[reference]))
    theirs = naive.enhance("", frame, references=REFS)
    assert_same_face(ours.enhance("", frame, references=REFS), theirs)
    # The references reach the model: the comparisons above are not vacuous.
    alone = naive.enhance("", frame)
    assert np.abs(theirs.astype(int) - alone.astype(int)).max() > 8
    assert_same_face(ours.enhance("", frame), alone)


def test_same_face_as_fsrst_server_with_registered_references(naive, ours):
    for client in (naive, ours):
        assert client.register_references("ann", REFS).reference_count == len(REFS)
    for frame in FRAMES:
        assert_same_face(ours.enhance("ann", frame), naive.enhance("ann", frame))
    streamed = list(naive.enhance_stream("ann", FRAMES))
    for frame, face in zip(FRAMES, streamed):
        assert np.array_equal(face, naive.enhance("ann", frame))
    jpeg = naive.enhance("ann", FRAMES[0], output="jpeg")
    assert 0 < np.abs(jpeg.astype(int) - streamed[0].astype(int)).mean() < 4


def test_the_client_reregisters_with_the_naive_server_too(naive):
    naive.register_references("bea", REFS[:2])
    before = naive.enhance("bea", FRAMES[0])
    stub = fsrst_pb2_grpc.FaceSuperResolutionStub(naive._channel)
    stub.DeleteReferences(fsrst_pb2.DeleteReferencesRequest(identity_id="bea"), timeout=10)
    with pytest.raises(grpc.RpcError) as gone:
        stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id="bea", frame=fsrst_pb2.Image(
            encoding=fsrst_pb2.ENCODING_RGB8, data=FRAMES[0].tobytes(), width=32, height=32)),
            timeout=10)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert np.array_equal(naive.enhance("bea", FRAMES[0]), before)


def test_errors_use_the_contracts_codes(naive):
    with pytest.raises(FsrstError) as unknown:
        naive.enhance("nobody", FRAMES[0])
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(FsrstError) as small:
        naive.enhance("", np.zeros((16, 16, 3), np.uint8))
    assert small.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame: expected 32x32" in small.value.message
    naive.register_references("cid", REFS[:1])
    results = list(naive.enhance_stream("cid", [FRAMES[0], np.zeros((16, 16, 3), np.uint8),
                                                FRAMES[1]], return_errors=True))
    assert [type(r).__name__ for r in results] == ["ndarray", "FsrstError", "ndarray"]
    assert (results[1].code, results[1].sequence_number) == (grpc.StatusCode.INVALID_ARGUMENT, 1)
    info = naive.server_info()
    assert (info.model_name, info.lr_size, info.max_batch_size) == ("fsrst_x4_small", 32, 1)
