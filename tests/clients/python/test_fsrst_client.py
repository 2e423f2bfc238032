"""The Python client (clients/python/fsrst_client): against a real fsrst_server
(round trip, transparent re-registration after a restart and after a server-side
deletion on a stream, errors, the CLI), and against an in-process fake server
for what a real one cannot show deterministically (headers, retry counts, the
order of a stream whose frames are re-sent)."""

import os
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
from PIL import Image

from server_process import ROOT, small_model
from fsrst.export import read_metadata

from fsrst_client import IDENTITY_METADATA_KEY, FsrstClient, FsrstError, to_proto
from fsrst_client._stubs import fsrst_pb2, fsrst_pb2_grpc

RNG = np.random.default_rng(11)
REFS = [RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(3)]
FRAMES = [RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(10)]
CLIENT_ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "clients", "python"))


def target(server) -> str:
    return f"127.0.0.1:{server.port}"


def raw_stub(server):
    channel = grpc.insecure_channel(target(server))
    return channel, fsrst_pb2_grpc.FaceSuperResolutionStub(channel)


# --- against fsrst_server ------------------------------------------------------------------


def test_round_trip_register_enhance_stream_info_health(fsrst_server, tmp_path):
    with FsrstClient(target(fsrst_server)) as client:
        assert client.health() == "SERVING"
        info = client.server_info()
        assert (info.model_name, info.lr_size, info.scale, info.reference_size) == (
            "fsrst_x4_small", 32, 4, 128)
        registered = client.register_references("ann", REFS)
        assert registered.reference_count == 3 and registered.feature_bytes > 0
        cached = client.enhance("ann", FRAMES[0])
        assert cached.shape == (128, 128, 3) and cached.dtype == np.uint8
        # The cached features give exactly what the same references give inline,
        # and what no references give differs (the references reach the model).
        assert np.array_equal(cached, client.enhance("", FRAMES[0], references=REFS))
        assert not np.array_equal(cached, client.enhance("", FRAMES[0]))
        # A PIL image and a file path are the same frame as the array.
        Image.fromarray(FRAMES[0]).save(tmp_path / "lr.png")
        assert np.array_equal(cached, client.enhance("ann", Image.fromarray(FRAMES[0])))
        assert np.array_equal(cached, client.enhance("ann", str(tmp_path / "lr.png")))
        jpeg = client.enhance("ann", FRAMES[0], output="jpeg")
        assert jpeg.shape == (128, 128, 3)
        assert 0 < np.abs(jpeg.astype(int) - cached.astype(int)).mean() < 4
        streamed = list(client.enhance_stream("ann", FRAMES))
        assert len(streamed) == len(FRAMES)
        assert np.array_equal(streamed[0], cached)
        for frame, face in zip(FRAMES[1:4], streamed[1:4]):
            assert np.array_equal(face, client.enhance("ann", frame))


def test_errors_carry_the_grpc_code_and_the_servers_message(fsrst_server):
    with FsrstClient(target(fsrst_server)) as client:
        with pytest.raises(FsrstError) as unknown:
            client.enhance("never-registered", FRAMES[0])
        assert unknown.value.code == grpc.StatusCode.NOT_FOUND
        assert "RegisterReferences again" in unknown.value.message
        with pytest.raises(FsrstError) as small:
            client.enhance("", np.zeros((16, 16, 3), np.uint8))
        assert small.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "frame" in small.value.message and "32x32" in small.value.message
        with pytest.raises(FsrstError) as deleted:
            client.delete_references("never-registered")
        assert deleted.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ValueError, match="uint8"):
            client.enhance("", np.zeros((32, 32, 3), np.float32))


def test_reregisters_transparently_after_a_server_restart(start_server):
    first = start_server()
    port = first.port
    client = FsrstClient(f"127.0.0.1:{port}", timeout_s=20)
    try:
        client.register_references("bea", REFS)
        before = client.enhance("bea", FRAMES[1])
        first.proc.kill()  # a crash: nothing drained, the cache is gone
        first.proc.wait()
        second = start_server(f"--port={port}")
        assert second.port == port
        # The new process has never seen "bea": the client registers it again by itself.
        after = client.enhance("bea", FRAMES[1])
    finally:
        client.close()
    assert np.array_equal(before, after)
    channel, stub = raw_stub(second)
    with channel:  # the identity is now cached in the new process
        stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id="bea", frame=to_proto(FRAMES[1])),
                     timeout=10)


def test_stream_reregisters_once_after_delete_references_and_keeps_order(fsrst_server, metric):
    with FsrstClient(target(fsrst_server)) as client:
        client.register_references("cid", REFS)
        expected = [client.enhance("cid", f) for f in FRAMES]
        # Someone else (an eviction, another client) drops the identity on the server.
        channel, stub = raw_stub(fsrst_server)
        with channel:
            stub.DeleteReferences(fsrst_pb2.DeleteReferencesRequest(identity_id="cid"), timeout=10)
        registrations = metric(fsrst_server, "fsrst_requests_total", code="OK",
                               rpc="RegisterReferences")
        not_found = metric(fsrst_server, "fsrst_stream_frames_total", code="NOT_FOUND")
        streamed = list(client.enhance_stream("cid", FRAMES))
    assert len(streamed) == len(FRAMES)
    for got, want in zip(streamed, expected):
        assert np.array_equal(got, want)
    assert metric(fsrst_server, "fsrst_requests_total", code="OK",
                  rpc="RegisterReferences") == registrations + 1
    assert metric(fsrst_server, "fsrst_stream_frames_total", code="NOT_FOUND") > not_found


def test_stream_bad_frame_raises_in_its_turn_or_is_returned(fsrst_server):
    frames = [FRAMES[0], np.zeros((16, 16, 3), np.uint8), FRAMES[2]]
    with FsrstClient(target(fsrst_server)) as client:
        client.register_references("dee", REFS)
        results = list(client.enhance_stream("dee", frames, return_errors=True))
        assert [type(r).__name__ for r in results] == ["ndarray", "FsrstError", "ndarray"]
        assert results[1].code == grpc.StatusCode.INVALID_ARGUMENT
        assert results[1].sequence_number == 1
        assert np.array_equal(results[2], client.enhance("dee", FRAMES[2]))
        stream = client.enhance_stream("dee", frames)
        assert next(stream).shape == (128, 128, 3)
        with pytest.raises(FsrstError) as error:
            next(stream)
        assert (error.value.code, error.value.sequence_number) == (
            grpc.StatusCode.INVALID_ARGUMENT, 1)


def test_cli_writes_the_face_and_a_side_by_side(fsrst_server, tmp_path, metric):
    Image.fromarray(FRAMES[2]).save(tmp_path / "lr.png")
    refs = []
    for i, r in enumerate(REFS):
        Image.fromarray(r).save(tmp_path / f"ref{i}.png")
        refs += ["--ref", str(tmp_path / f"ref{i}.png")]
    deletions = metric(fsrst_server, "fsrst_requests_total", code="OK", rpc="DeleteReferences")
    result = subprocess.run(
        [sys.executable, "-m", "fsrst_client", "enhance", "--server", target(fsrst_server),
         "--frame", str(tmp_path / "lr.png"), *refs, "--out", str(tmp_path / "out.png"),
         "--side_by_side", str(tmp_path / "sbs.png")],
        capture_output=True, text=True, env=CLIENT_ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    with FsrstClient(target(fsrst_server)) as client:
        assert np.array_equal(out, client.enhance("", FRAMES[2], references=REFS))
    sbs = np.asarray(Image.open(tmp_path / "sbs.png"))
    assert sbs.shape == (16 + 128, 128 * 6, 3)  # label strip; LR, bicubic, enhanced, 3 refs
    assert np.array_equal(sbs[16:, 256:384], out)
    assert np.array_equal(sbs[16:, 0:128], np.repeat(np.repeat(FRAMES[2], 4, 0), 4, 1))
    assert np.array_equal(sbs[16:, 384:512], REFS[0])
    # The CLI's throwaway identity is deleted again.
    assert metric(fsrst_server, "fsrst_requests_total", code="OK",
                  rpc="DeleteReferences") == deletions + 1


def test_cli_info_health_and_a_bad_frame(fsrst_server, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fsrst_client", *args, "--server",
                               target(fsrst_server)], capture_output=True, text=True,
                              env=CLIENT_ENV, timeout=60)

    health = cli("health")
    assert (health.returncode, health.stdout) == (0, "SERVING\n")
    info = cli("info")
    assert info.returncode == 0
    assert "model_name: fsrst_x4_small\n" in info.stdout and "lr_size: 32\n" in info.stdout
    assert f"model_trained: {read_metadata(small_model())['trained']}\n" in info.stdout
    Image.fromarray(REFS[0]).save(tmp_path / "big.png")
    bad = cli("enhance", "--frame", str(tmp_path / "big.png"), "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr and "expected 32x32" in bad.stderr
    assert not (tmp_path / "x.png").exists()
    down = subprocess.run([sys.executable, "-m", "fsrst_client", "health", "--server",
                           "127.0.0.1:1", "--timeout_s=5"], capture_output=True, text=True,
                          env=CLIENT_ENV, timeout=60)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr


# --- against a fake server -----------------------------------------------------------------


class FakeService(fsrst_pb2_grpc.FaceSuperResolutionServicer):
    """Records every call with its x-fsrst-identity header and echoes frames back.
    Identities it has not registered (or has forgotten) answer NOT_FOUND."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []  # (rpc, x-fsrst-identity header or None)
        self.references = {}  # identity -> [Image]
        self.forget_at_sequence = None  # on a stream, forget the identity at this frame
        self.always_not_found = False

    def _record(self, rpc, context):
        header = dict(context.invocation_metadata()).get(IDENTITY_METADATA_KEY)
        with self.lock:
            self.calls.append((rpc, header))

    def count(self, rpc):
        with self.lock:
            return sum(1 for name, _ in self.calls if name == rpc)

    def _answer(self, request):
        with self.lock:
            if request.sequence_number == self.forget_at_sequence:
                self.forget_at_sequence = None
                self.references.pop(request.identity_id, None)
            known = request.identity_id in self.references and not self.always_not_found
        if request.identity_id and not known:
            return None
        return fsrst_pb2.EnhanceResponse(image=request.frame,
                                         sequence_number=request.sequence_number)

    def RegisterReferences(self, request, context):
        self._record("RegisterReferences", context)
        with self.lock:
            self.references[request.identity_id] = list(request.references)
        return fsrst_pb2.RegisterReferencesResponse(reference_count=len(request.references))

    def Enhance(self, request, context):
        self._record("Enhance", context)
        response = self._answer(request)
        if response is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "register again")
        return response

    def EnhanceStream(self, requests, context):
        self._record("EnhanceStream", context)
        for request in requests:
            yield self._answer(request) or fsrst_pb2.EnhanceResponse(
                sequence_number=request.sequence_number,
                error=fsrst_pb2.FrameError(code=5, message="register again"))

    def DeleteReferences(self, request, context):
        self._record("DeleteReferences", context)
        with self.lock:
            self.references.pop(request.identity_id, None)
        return fsrst_pb2.DeleteReferencesResponse()

    def GetServerInfo(self, request, context):
        self._record("GetServerInfo", context)
        return fsrst_pb2.GetServerInfoResponse(model_name="fake")


@pytest.fixture
def fake():
    service = FakeService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fsrst_pb2_grpc.add_FaceSuperResolutionServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = FsrstClient(f"127.0.0.1:{port}", timeout_s=10)
    yield service, client
    client.close()
    server.stop(None)


def test_every_identity_bound_call_carries_the_identity_header(fake):
    service, client = fake
    client.register_references("eve", REFS[:1])
    client.enhance("eve", FRAMES[0])
    list(client.enhance_stream("eve", FRAMES[:2]))
    client.delete_references("eve")
    client.enhance("", FRAMES[0])
    client.server_info()
    assert service.calls == [("RegisterReferences", "eve"), ("Enhance", "eve"),
                             ("EnhanceStream", "eve"), ("DeleteReferences", "eve"),
                             ("Enhance", None), ("GetServerInfo", None)]


def test_images_are_sent_as_rgb8_or_as_jpeg(fake, tmp_path):
    service, client = fake
    array = REFS[0]
    Image.fromarray(array).save(tmp_path / "ref.png")
    Image.fromarray(array).save(tmp_path / "ref.jpg", quality=90)
    client.register_references("fay", [array, Image.fromarray(array), tmp_path / "ref.png"])
    for image in service.references["fay"]:
        assert (image.encoding, image.width, image.height) == (fsrst_pb2.ENCODING_RGB8, 128, 128)
        assert image.data == array.tobytes()
    client.register_references("fay", [str(tmp_path / "ref.jpg"), array], encoding="jpeg")
    as_file, encoded = service.references["fay"]
    assert as_file.encoding == encoded.encoding == fsrst_pb2.ENCODING_JPEG
    assert as_file.data == (tmp_path / "ref.jpg").read_bytes()  # sent as it is
    assert encoded.data[:3] == b"\xff\xd8\xff"
    # The fake echoes the frame: what comes back is what was sent.
    assert np.array_equal(client.enhance("fay", FRAMES[3]), FRAMES[3])


def test_unary_retries_once_after_one_reregistration(fake):
    service, client = fake
    client.register_references("gus", REFS[:1])
    service.always_not_found = True
    with pytest.raises(FsrstError) as error:
        client.enhance("gus", FRAMES[0])
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    assert (service.count("RegisterReferences"), service.count("Enhance")) == (2, 2)
    # An identity this client never registered is not retried.
    with pytest.raises(FsrstError):
        client.enhance("stranger", FRAMES[0])
    assert (service.count("RegisterReferences"), service.count("Enhance")) == (2, 3)


def test_stream_resends_lost_frames_after_one_registration_in_order(fake):
    service, client = fake
    client.register_references("hal", REFS[:1])
    service.forget_at_sequence = 3  # frames 3.. already on their way answer NOT_FOUND
    frames = [np.full((32, 32, 3), i, np.uint8) for i in range(40)]
    results = list(client.enhance_stream("hal", iter(frames), max_in_flight=8))
    assert [int(r[0, 0, 0]) for r in results] == list(range(40))
    assert service.count("RegisterReferences") == 2
    assert service.count("EnhanceStream") == 1


def test_stream_consumes_frames_lazily(fake):
    service, client = fake
    client.register_references("ida", REFS[:1])
    pulled = []

    def frames():
        for i in range(100):
            pulled.append(i)
            yield np.full((32, 32, 3), i, np.uint8)

    stream = client.enhance_stream("ida", frames(), max_in_flight=4)
    first = next(stream)
    assert int(first[0, 0, 0]) == 0
    assert len(pulled) <= 1 + 4  # one yielded, at most max_in_flight ahead
    stream.close()  # leaving early cancels the call


def test_stream_surfaces_the_frame_sources_error_after_the_frames_before_it(fake):
    service, client = fake
    client.register_references("jon", REFS[:1])

    def frames():
        yield FRAMES[0]
        yield FRAMES[1]
        raise OSError("camera unplugged")

    results = []
    with pytest.raises(OSError, match="camera unplugged"):
        for face in client.enhance_stream("jon", frames()):
            results.append(face)
    assert len(results) == 2 and np.array_equal(results[1], FRAMES[1])
    assert list(client.enhance_stream("jon", [])) == []
