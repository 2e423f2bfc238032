"""The Python client (clients/python/fsrst_client): against a real fsrst_server
(round trip, transparent re-registration after a restart and after a server-side
deletion on a stream, errors, the CLI), and against an in-process fake server
for what a real one cannot show deterministically (headers, retry counts, the
order of a stream whose frames are re-sent, a replica that drains)."""

import os
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
from PIL import Image

from server_process import ROOT, read_metric, small_model
from fsrst.export import read_metadata

import fsrst_client.client
from fsrst_client import IDENTITY_METADATA_KEY, FsrstClient, FsrstError, to_proto
from fsrst_client._stubs import fsrst_pb2, fsrst_pb2_grpc

RNG = np.random.default_rng(11)
REFS = [RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(3)]
FRAMES = [RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(10)]
CLIENT_ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "clients", "python"))
DRAINING = "the server is shutting down; retry on another replica"


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


def test_weights_and_get_identity(fsrst_server):
    with FsrstClient(target(fsrst_server)) as client:
        assert client.server_info().reference_weights
        client.register_references("weights-ann", REFS)
        fresh = client.get_identity("weights-ann")
        assert (fresh.identity_id, fresh.reference_count, fresh.frames_served) == (
            "weights-ann", 3, 0)
        assert fresh.feature_bytes == client.register_references("weights-ann", REFS).feature_bytes
        assert list(fresh.mean_reference_weights) == []
        one = client.enhance("weights-ann", FRAMES[0], with_weights=True)
        assert np.array_equal(one.image, client.enhance("weights-ann", FRAMES[0]))
        assert len(one.weights) == 3 and all(0.0 <= w <= 1.0 for w in one.weights)
        streamed = list(client.enhance_stream("weights-ann", FRAMES[:3], with_weights=True))
        assert [len(s.weights) for s in streamed] == [3, 3, 3]
        assert streamed[0].weights == pytest.approx(one.weights, abs=1e-6)
        # No references, no weights.
        assert client.enhance("", FRAMES[0], with_weights=True).weights == ()
        # Frames served: the two unary calls on weights-ann and the three streamed.
        seen = [one.weights, one.weights] + [s.weights for s in streamed]
        info = client.get_identity("weights-ann")
        assert info.frames_served == 5
        assert list(info.mean_reference_weights) == pytest.approx(
            np.mean(np.array(seen, np.float64), axis=0).tolist(), abs=1e-6)
        assert info.last_used_time_unix_ms >= info.registered_time_unix_ms
        with pytest.raises(FsrstError) as error:
            client.get_identity("weights-nobody")
        assert error.value.code == grpc.StatusCode.NOT_FOUND


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


def test_stream_reregisters_once_after_delete_references_and_keeps_order(fsrst_server):
    with FsrstClient(target(fsrst_server)) as client:
        client.register_references("cid", REFS)
        expected = [client.enhance("cid", f) for f in FRAMES]
        # Someone else (an eviction, another client) drops the identity on the server.
        channel, stub = raw_stub(fsrst_server)
        with channel:
            stub.DeleteReferences(fsrst_pb2.DeleteReferencesRequest(identity_id="cid"), timeout=10)
        registrations = read_metric(fsrst_server, "fsrst_requests_total", code="OK",
                               rpc="RegisterReferences")
        not_found = read_metric(fsrst_server, "fsrst_stream_frames_total", code="NOT_FOUND")
        streamed = list(client.enhance_stream("cid", FRAMES))
    assert len(streamed) == len(FRAMES)
    for got, want in zip(streamed, expected):
        assert np.array_equal(got, want)
    assert read_metric(fsrst_server, "fsrst_requests_total", code="OK",
                  rpc="RegisterReferences") == registrations + 1
    assert read_metric(fsrst_server, "fsrst_stream_frames_total", code="NOT_FOUND") > not_found


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


def test_cli_writes_the_face_and_a_side_by_side(fsrst_server, tmp_path):
    Image.fromarray(FRAMES[2]).save(tmp_path / "lr.png")
    refs = []
    for i, r in enumerate(REFS):
        Image.fromarray(r).save(tmp_path / f"ref{i}.png")
        refs += ["--ref", str(tmp_path / f"ref{i}.png")]
    deletions = read_metric(fsrst_server, "fsrst_requests_total", code="OK",
                            rpc="DeleteReferences")
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
    assert read_metric(fsrst_server, "fsrst_requests_total", code="OK",
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
        # Drains, as a replica sent SIGTERM does: the next `refused_calls` unary calls
        # end UNAVAILABLE; the next `draining_streams` EnhanceStream calls answer their
        # first `frames_before_drain` frames and refuse every later one in its own
        # FrameError UNAVAILABLE (or, with abort_when_draining, end the call UNAVAILABLE).
        self.refused_calls = 0
        self.draining_streams = 0
        self.frames_before_drain = 0
        self.abort_when_draining = False
        self.refuse_with = grpc.StatusCode.UNAVAILABLE  # the code of those refusals
        self.refuse_message = DRAINING  # and their message
        self.stream_frames = []  # (call number, sequence number) of each frame received
        # The next `streams_elsewhere` EnhanceStream calls land where no registration
        # arrives (a proxy routed them to another replica): every frame NOT_FOUND.
        self.streams_elsewhere = 0

    def _record(self, rpc, context):
        header = dict(context.invocation_metadata()).get(IDENTITY_METADATA_KEY)
        with self.lock:
            self.calls.append((rpc, header))

    def count(self, rpc):
        with self.lock:
            return self.count_locked(rpc)

    def count_locked(self, rpc):
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

    def _refuse(self, context):
        with self.lock:
            refuse = self.refused_calls > 0
            self.refused_calls -= refuse
        if refuse:
            context.abort(self.refuse_with, self.refuse_message)

    def RegisterReferences(self, request, context):
        self._record("RegisterReferences", context)
        self._refuse(context)
        with self.lock:
            self.references[request.identity_id] = list(request.references)
        return fsrst_pb2.RegisterReferencesResponse(reference_count=len(request.references))

    def Enhance(self, request, context):
        self._record("Enhance", context)
        self._refuse(context)
        response = self._answer(request)
        if response is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "register again")
        return response

    def EnhanceStream(self, requests, context):
        self._record("EnhanceStream", context)
        with self.lock:
            call = self.count_locked("EnhanceStream")
            draining = self.draining_streams > 0
            self.draining_streams -= draining
            elsewhere = self.streams_elsewhere > 0
            self.streams_elsewhere -= elsewhere
        for answered, request in enumerate(requests):
            with self.lock:
                self.stream_frames.append((call, request.sequence_number))
            if draining and answered >= self.frames_before_drain:
                if self.abort_when_draining:
                    context.abort(self.refuse_with, self.refuse_message)
                yield fsrst_pb2.EnhanceResponse(
                    sequence_number=request.sequence_number,
                    error=fsrst_pb2.FrameError(code=self.refuse_with.value[0], message=DRAINING))
                continue
            yield (None if elsewhere else self._answer(request)) or fsrst_pb2.EnhanceResponse(
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
def fast_retries(monkeypatch):
    """The client's waits between tries cut to milliseconds (the counts stay)."""
    monkeypatch.setattr(fsrst_client.client, "_INITIAL_BACKOFF_S", 0.001, raising=False)
    monkeypatch.setattr(fsrst_client.client, "_MAX_BACKOFF_S", 0.004, raising=False)


@pytest.fixture
def fake():
    service = FakeService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fsrst_pb2_grpc.add_FaceSuperResolutionServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    service.port = port
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


# --- rolling updates: calls refused or cut because their server drains -------------------


def numbered_frames(count):
    """Frames whose pixels are their index: the fake echoes them, so order shows."""
    return [np.full((32, 32, 3), i, np.uint8) for i in range(count)]


def test_stream_refused_by_a_draining_server_is_reopened_and_resent_in_order(fake,
                                                                            fast_retries):
    service, client = fake
    client.register_references("kim", REFS[:1])
    service.draining_streams = 1
    service.frames_before_drain = 5
    results = list(client.enhance_stream("kim", numbered_frames(30), max_in_flight=8))
    assert [int(r[0, 0, 0]) for r in results] == list(range(30))
    assert service.count("EnhanceStream") == 2
    # the second call starts with the first frame the draining one refused, then in order
    second = [seq for call, seq in service.stream_frames if call == 2]
    assert second == list(range(5, 30))
    assert service.count("RegisterReferences") == 1  # the fake kept the identity


def test_stream_cut_with_unavailable_is_reopened_and_resent_in_order(fake, fast_retries):
    service, client = fake
    client.register_references("lou", REFS[:1])
    service.draining_streams = 5  # five calls in a row are cut, each after 4 frames
    service.frames_before_drain = 4
    service.abort_when_draining = True
    results = list(client.enhance_stream("lou", numbered_frames(30), max_in_flight=4))
    assert [int(r[0, 0, 0]) for r in results] == list(range(30))
    assert service.count("EnhanceStream") == 6


def test_stream_reopened_on_a_replica_without_the_identity_reregisters(fake, fast_retries):
    service, client = fake
    client.register_references("max", REFS[:1])
    service.draining_streams = 1
    service.frames_before_drain = 3
    service.forget_at_sequence = 3  # the next call lands where "max" is unknown
    results = list(client.enhance_stream("max", numbered_frames(12), max_in_flight=4))
    assert [int(r[0, 0, 0]) for r in results] == list(range(12))
    assert (service.count("EnhanceStream"), service.count("RegisterReferences")) == (2, 2)


def test_stream_on_a_replica_the_registration_does_not_reach_is_reopened(fake, fast_retries):
    service, client = fake
    client.register_references("ray", REFS[:1])
    service.streams_elsewhere = 1
    results = list(client.enhance_stream("ray", numbered_frames(6), max_in_flight=3))
    assert [int(r[0, 0, 0]) for r in results] == list(range(6))
    # NOT_FOUND, registered, sent again, NOT_FOUND again: registered again and reopened
    assert (service.count("EnhanceStream"), service.count("RegisterReferences")) == (2, 3)


def test_stream_reopens_are_bounded_and_the_last_error_surfaces(fake, fast_retries):
    service, client = fake
    client.register_references("ned", REFS[:1])
    service.draining_streams = 1000  # every replica drains
    service.frames_before_drain = 2
    stream = client.enhance_stream("ned", numbered_frames(10), max_in_flight=4)
    assert [int(next(stream)[0, 0, 0]) for _ in range(2)] == [0, 1]
    service.frames_before_drain = 0  # from now on every call refuses its first frame
    with pytest.raises(FsrstError) as error:
        next(stream)
    assert (error.value.code, error.value.message, error.value.sequence_number) == (
        grpc.StatusCode.UNAVAILABLE, DRAINING, 2)
    # the first call, then 10 reopens; a reopen that answers frames would reset the count
    assert service.count("EnhanceStream") == 1 + fsrst_client.client._STREAM_REOPENS


def test_stream_does_not_reopen_after_a_non_retryable_refusal(fake, fast_retries):
    service, client = fake
    client.register_references("oda", REFS[:1])
    service.draining_streams = 1
    service.frames_before_drain = 1
    service.refuse_with = grpc.StatusCode.PERMISSION_DENIED
    results = list(client.enhance_stream("oda", numbered_frames(3), return_errors=True))
    assert [type(r).__name__ for r in results] == ["ndarray", "FsrstError", "FsrstError"]
    assert results[1].code == grpc.StatusCode.PERMISSION_DENIED
    assert service.count("EnhanceStream") == 1


def test_unary_calls_refused_by_a_draining_server_are_made_again(fake, fast_retries):
    service, client = fake
    client.register_references("pia", REFS[:1])
    service.refused_calls = 6  # more than gRPC's own retry policy allows (at most 5 tries)
    assert np.array_equal(client.enhance("pia", FRAMES[4]), FRAMES[4])
    assert service.count("Enhance") == 7
    service.refused_calls = 3
    client.register_references("pia", REFS[:2])
    assert service.count("RegisterReferences") == 1 + 4


def test_unary_retries_are_bounded(fake, fast_retries):
    service, client = fake
    service.refused_calls = 1000
    with pytest.raises(FsrstError) as error:
        client.enhance("", FRAMES[0])
    assert (error.value.code, error.value.message) == (grpc.StatusCode.UNAVAILABLE, DRAINING)
    assert service.count("Enhance") == fsrst_client.client._MAX_ATTEMPTS


def test_unary_retries_stay_within_the_deadline(fake):
    service, client = fake
    service.refused_calls = 1000
    # the real waits: 25-50 ms, 50-100 ms, 100-200 ms, ...: a 0.3 s deadline allows a few
    with FsrstClient(f"127.0.0.1:{service.port}", timeout_s=0.3) as short:
        with pytest.raises(FsrstError) as error:
            short.enhance("", FRAMES[0])
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert 2 <= service.count("Enhance") <= 5


def test_calls_a_shutting_down_server_never_ran_are_made_again(fake, fast_retries):
    # gRPC core ends a call that reaches a server whose Shutdown has begun with CANCELLED
    # "CANCELLED" (grpc/grpc#41785): the call never ran, as with UNAVAILABLE. The fleet test
    # (tests/deploy/test_fleet_store.py) met it in a rolling restart.
    service, client = fake
    client.register_references("quinn", REFS[:1])
    service.refuse_with = grpc.StatusCode.CANCELLED
    service.refuse_message = "CANCELLED"
    service.refused_calls = 2
    assert np.array_equal(client.enhance("quinn", FRAMES[4]), FRAMES[4])
    assert service.count("Enhance") == 3
    service.draining_streams = 1
    service.frames_before_drain = 2
    service.abort_when_draining = True
    results = list(client.enhance_stream("quinn", numbered_frames(6), max_in_flight=2))
    assert [int(r[0, 0, 0]) for r in results] == list(range(6))
    assert service.count("EnhanceStream") == 2
    # Any other cancellation is not that: it surfaces at once.
    service.refused_calls = 1
    service.refuse_message = "cancelled by a proxy"
    with pytest.raises(FsrstError) as error:
        client.enhance("quinn", FRAMES[4])
    assert (error.value.code, error.value.message) == (grpc.StatusCode.CANCELLED,
                                                       "cancelled by a proxy")
    assert service.count("Enhance") == 4


def test_non_retryable_errors_surface_at_once(fake, fast_retries):
    service, client = fake
    service.refused_calls = 1
    service.refuse_with = grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(FsrstError) as error:
        client.enhance("", FRAMES[0])
    assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert service.count("Enhance") == 1


@pytest.mark.parametrize("identity_id, message", [
    ("josé", "identity_id: character 4 ('é', U+00E9) is not allowed; "
             "expected only [A-Za-z0-9._:@-]"),
    ("a b", "identity_id: character 2 (' ') is not allowed; expected only [A-Za-z0-9._:@-]"),
    ("a\tb", "identity_id: character 2 (U+0009) is not allowed; "
             "expected only [A-Za-z0-9._:@-]"),
    ("x" * 129, "identity_id: expected 1 to 128 characters, got 129"),
])
def test_identity_ids_the_server_would_refuse_are_refused_before_sending(fake, identity_id,
                                                                        message):
    service, client = fake
    calls = [lambda: client.register_references(identity_id, REFS[:1]),
             lambda: client.enhance(identity_id, FRAMES[0]),
             lambda: client.enhance_stream(identity_id, FRAMES[:1]),
             lambda: client.delete_references(identity_id)]
    for call in calls:
        with pytest.raises(FsrstError) as error:
            call()
        assert (error.value.code, error.value.message) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                           message)
    assert service.calls == []
    client.register_references("x" * 128, REFS[:1])  # the longest id the server takes


def test_identity_rule_matches_the_servers(fsrst_server):
    """The client's message is the server's own answer, word for word."""
    channel, stub = raw_stub(fsrst_server)
    with channel:
        for identity_id in ("a b", "a\tb", "x" * 129):
            with pytest.raises(grpc.RpcError) as server:
                stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
                    identity_id=identity_id, references=[to_proto(REFS[0])]), timeout=10)
            with pytest.raises(FsrstError) as client:
                fsrst_client.client.check_identity_id(identity_id)
            assert server.value.code() == client.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert server.value.details() == client.value.message


def test_cli_refuses_an_identity_the_server_would_refuse_in_one_line(tmp_path):
    Image.fromarray(FRAMES[0]).save(tmp_path / "lr.png")
    Image.fromarray(REFS[0]).save(tmp_path / "ref.png")
    result = subprocess.run(
        [sys.executable, "-m", "fsrst_client", "enhance", "--server", "127.0.0.1:1",
         "--identity", "josé", "--frame", str(tmp_path / "lr.png"), "--ref",
         str(tmp_path / "ref.png"), "--out", str(tmp_path / "out.png")],
        capture_output=True, text=True, env=CLIENT_ENV, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("fsrst_client: INVALID_ARGUMENT: identity_id: character 4 ('é', "
                             "U+00E9) is not allowed; expected only [A-Za-z0-9._:@-]\n")


def test_stream_not_found_again_with_the_reopens_spent_is_the_frames_answer(fake, fast_retries,
                                                                            monkeypatch):
    service, client = fake
    monkeypatch.setattr(fsrst_client.client, "_STREAM_REOPENS", 0)
    client.register_references("sam", REFS[:1])
    service.streams_elsewhere = 1
    results = list(client.enhance_stream("sam", numbered_frames(2), max_in_flight=1,
                                         return_errors=True))
    assert [(r.code, r.sequence_number) for r in results] == [
        (grpc.StatusCode.NOT_FOUND, 0), (grpc.StatusCode.NOT_FOUND, 1)]
    # each frame (sent after the last registration): NOT_FOUND, registered again, sent
    # again, NOT_FOUND; no reopen
    assert (service.count("EnhanceStream"), service.count("RegisterReferences")) == (1, 3)


def test_jpeg_quality_of_answers_reaches_the_server(fsrst_server):
    with FsrstClient(target(fsrst_server)) as client:
        answer = lambda quality: client.enhance("", FRAMES[1], "jpeg", jpeg_quality=quality)
        default, best, worst = answer(0), answer(95), answer(10)
        # 0 is the server's default, 95 (the fixture's server runs with defaults).
        assert np.array_equal(default, best)
        # A low quality is another JPEG, further from the exact answer.
        exact = client.enhance("", FRAMES[1], "rgb8").astype(np.int16)
        assert np.abs(worst - exact).mean() > np.abs(best - exact).mean()
        with pytest.raises(FsrstError) as too_high:
            answer(101)
        assert too_high.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert too_high.value.message == "jpeg_quality: expected 0 (default) to 100, got 101"
