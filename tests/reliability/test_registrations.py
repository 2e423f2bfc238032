"""Issue 19, defects 1-4: RegisterReferences under abuse, against the real fsrst_server binary.
Registrations are bounded (RESOURCE_EXHAUSTED at once beyond --max_pending_registrations, and
beyond --max_queued_decodes), frames keep flowing while registrations wait, a registration whose
caller gave up is neither computed nor stored, a drain that runs out of time exits at once, and
decoding large references leaves health checks answered.

The servers run fsrst_x4_small on one model instance of one thread, so encodes run one at a
time. Queues are sized from a measured registration, as tests/reliability/test_faults.py does
for frames, so that they hold seconds of work on a fast host and a slow one alike."""

import concurrent.futures
import io
import signal
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from server_process import ServerProcess, read_metric, rgb8, small_model, wait_for
import fsrst_pb2
import fsrst_pb2_grpc
import health_pb2
import health_pb2_grpc

ONE_INSTANCE = ("--model_instances=1", "--model_threads=1")
# Bounds out of the way, for tests of what happens to what the bounds let in.
UNBOUNDED = ("--max_pending_registrations=100000", "--max_queued_decodes=100000")
FRAME = rgb8(np.zeros((32, 32, 3), np.uint8))
# Eight 2x2 references: a request of ~200 bytes that costs a full 8-reference encode, as in
# the attack (a black and white checker each, so the server's check for blank
# references lets them through: a 1x1 one is a solid colour now refused at decode).
TINY_REFS = [fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8,
                             data=bytes([i, 2 * i, 3 * i, 255, 255, 255, 255, 255, 255, 0, 0, 0]),
                             width=2, height=2) for i in range(8)]


def jpeg_refs(count: int, size: int) -> list:
    """`count` smooth JPEG references of size x size (small files that take long to decode)."""
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([x * 255 // (size - 1), y * 255 // (size - 1),
                       (x + y) * 255 // (2 * size - 2)], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    ref = fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_JPEG, data=buffer.getvalue())
    return [ref] * count


def register(stub, identity, refs, timeout):
    return stub.RegisterReferences.future(
        fsrst_pb2.RegisterReferencesRequest(identity_id=identity, references=refs),
        timeout=timeout)


def own_connection(port: int) -> grpc.Channel:
    """A channel on a TCP connection of its own (channels to one target share one otherwise)."""
    return grpc.insecure_channel(f"127.0.0.1:{port}",
                                 options=[("grpc.use_local_subchannel_pool", 1)])


class Flood:
    """`count` registrations spread over connections of 50 calls each, so that all of them
    reach the server at once (a connection carries a limited number of concurrent calls, and
    the rest would wait in the client)."""

    def __init__(self, port: int, prefix: str, count: int, refs, timeout: float):
        self.channels = [own_connection(port) for _ in range((count + 49) // 50)]
        stubs = [fsrst_pb2_grpc.FaceSuperResolutionStub(c) for c in self.channels]
        self.calls = [register(stubs[i // 50], f"{prefix}-{i}", refs, timeout)
                      for i in range(count)]

    def close(self):
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


def code_of(future):
    try:
        future.result()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def registration_seconds(stub) -> float:
    """The fastest of a few one-at-a-time tiny registrations (decode + encode + RPC)."""
    stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
        identity_id="warm-up", references=TINY_REFS), timeout=60)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
            identity_id="warm-up", references=TINY_REFS), timeout=60)
        times.append(time.perf_counter() - start)
    return min(times)


class Server:
    """A ServerProcess with a channel and stub, stopped (exit status checked) on leaving."""

    def __init__(self, *flags):
        self.process = ServerProcess(small_model(), *ONE_INSTANCE, *flags)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.process.port}")
        self.stub = fsrst_pb2_grpc.FaceSuperResolutionStub(self.channel)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.channel.close()
        assert self.process.stop() == 0


def test_registrations_beyond_the_bound_are_refused_at_once():
    # Each registration decodes eight 2048x2048 JPEGs on the one decode thread: a second or
    # more, so the 16 calls (sent within milliseconds) find 4 in progress.
    refs = jpeg_refs(8, 2048)
    with Server("--max_pending_registrations=4", "--decode_threads=1") as server:
        calls = [register(server.stub, f"bound-{i}", refs, timeout=120) for i in range(16)]
        wait_for(lambda: read_metric(server.process, "fsrst_registrations_pending") == 4, 60,
                 "fsrst_registrations_pending 4")
        codes = [code_of(c) for c in calls]
        refused = [c for c in calls if code_of(c) == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert len(refused) >= 8, codes
        assert "max_pending_registrations" in refused[0].exception().details()
        wait_for(lambda: read_metric(server.process, "fsrst_registrations_pending") == 0, 60,
                 "fsrst_registrations_pending 0")


def test_frames_keep_flowing_while_registrations_wait():
    with Server(*UNBOUNDED) as server:
        count = max(40, int(4.0 / registration_seconds(server.stub)))  # ~4 s of encodes
        flood = Flood(server.process.port, "flood", count, TINY_REFS, timeout=300)
        try:
            calls = flood.calls
            wait_for(lambda: any(c.done() for c in calls), 60, "a registration to finish")
            # Once used to wait for every registration queued ahead of it.
            with own_connection(server.process.port) as other:
                answer = fsrst_pb2_grpc.FaceSuperResolutionStub(other).Enhance(
                    fsrst_pb2.EnhanceRequest(frame=FRAME), timeout=120)
            still_waiting = sum(1 for c in calls if not c.done())
            assert len(answer.image.data) == 128 * 128 * 3
            assert still_waiting >= count // 2, f"{still_waiting} of {count} still waiting"
        finally:
            flood.close()


def test_a_registration_whose_deadline_passed_in_the_queue_is_neither_computed_nor_stored():
    with Server(*UNBOUNDED) as server:
        # About 2 s of encodes ahead; at most 100 calls (2 connections): with more, the old
        # server took so long to start a call that the late ones never reached it.
        ahead_count = min(100, max(20, int(2.0 / registration_seconds(server.stub))))
        encodes_before = read_metric(server.process,
                                     "fsrst_reference_encode_duration_seconds_count")
        flood = Flood(server.process.port, "ahead", ahead_count, TINY_REFS, timeout=300)
        ahead = flood.calls
        wait_for(lambda: any(c.done() for c in ahead), 60, "a registration ahead to finish")
        with own_connection(server.process.port) as other:
            late_stub = fsrst_pb2_grpc.FaceSuperResolutionStub(other)
            late = [register(late_stub, f"late-{i}", TINY_REFS, timeout=0.5) for i in range(5)]
            assert [code_of(c) for c in late] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 5
        assert all(code_of(c) == grpc.StatusCode.OK for c in ahead)
        flood.close()
        wait_for(lambda: read_metric(server.process, "fsrst_registrations_pending") == 0, 60,
                 "fsrst_registrations_pending 0")
        # Not computed: one encode per OK, none for the late ones.
        wait_for(lambda: read_metric(
            server.process, "fsrst_reference_encode_duration_seconds_count")
            == encodes_before + ahead_count, 60, f"{ahead_count} encodes")
        assert read_metric(server.process, "fsrst_reference_encode_duration_seconds_count") \
            == encodes_before + ahead_count
        # Not stored: the callers were told it failed.
        for i in range(5):
            with pytest.raises(grpc.RpcError) as error:
                server.stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id=f"late-{i}",
                                                             frame=FRAME), timeout=60)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert server.stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id="ahead-0", frame=FRAME),
                                   timeout=60).image.data


def test_a_drain_that_runs_out_of_time_exits_at_once_and_answers_every_call():
    server = ServerProcess(small_model(), *ONE_INSTANCE, *UNBOUNDED, "--drain_timeout_s=1")
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
    try:
        # ~20 s of encodes queued when SIGTERM comes; the drain allows 1 s.
        queued = int(20.0 / registration_seconds(stub))
        flood = Flood(server.port, "drain", queued + queued // 2, TINY_REFS, timeout=300)
        calls = flood.calls
        wait_for(lambda: read_metric(server, "fsrst_registration_queue_depth") >= queued, 120,
                 f"fsrst_registration_queue_depth >= {queued}")
        server.proc.send_signal(signal.SIGTERM)
        # Once exited only after encoding everything queued (39 s in the issue).
        try:
            server.proc.wait(timeout=10)
        except Exception:
            pytest.fail(f"still running 10 s after SIGTERM with --drain_timeout_s=1 "
                        f"({queued} registrations, ~20 s of encodes, were queued)")
        codes = [code_of(c) for c in calls]
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, set(codes)
        assert codes.count(grpc.StatusCode.UNAVAILABLE) > queued // 2
        assert "drain timed out, exiting" in server.output()
        assert server.proc.returncode == 0
        flood.close()
    finally:
        channel.close()
        server.stop()


@pytest.mark.parametrize("rpc", ["RegisterReferences", "Enhance", "EnhanceStream"])
def test_decoding_large_references_leaves_health_checks_answered(rpc):
    # 4 calls of four 4096x4096 JPEGs (registered, or inline with a frame, unary or as the one
    # frame of a stream): seconds of decoding each. Decoded on gRPC threads, they made 1 s
    # readiness probes fail; now they queue for the one decode thread (bounded).
    refs = jpeg_refs(4, 4096)
    with Server("--decode_threads=1", "--max_queued_decodes=2") as server:
        health = health_pb2_grpc.HealthStub(server.channel)
        if rpc == "RegisterReferences":
            calls = [register(server.stub, f"large-{i}", refs, timeout=300) for i in range(4)]
        elif rpc == "Enhance":
            calls = [server.stub.Enhance.future(
                fsrst_pb2.EnhanceRequest(frame=FRAME, references=refs), timeout=300)
                for _ in range(4)]
        else:
            # Each on a connection of its own, as separate clients would be: the frames of
            # streams that share a connection reached the old server one at a time.
            connections = [own_connection(server.process.port) for _ in range(4)]
            streams = [fsrst_pb2_grpc.FaceSuperResolutionStub(c).EnhanceStream(
                iter([fsrst_pb2.EnhanceRequest(frame=FRAME, references=refs, sequence_number=i)]),
                timeout=300) for i, c in enumerate(connections)]
            # Each stream read to its end on a thread: futures of its list of answers.
            readers = concurrent.futures.ThreadPoolExecutor(len(streams))
            calls = [readers.submit(list, stream) for stream in streams]
        wait_for(lambda: read_metric(server.process, "fsrst_decode_queue_depth") >= 1
                 or any(c.done() for c in calls), 60, "a decode queued or a call done")
        answered = 0
        for _ in range(5):
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            answered += 1
        still_decoding = sum(1 for c in calls if not c.done())
        assert still_decoding >= 1, "the decodes ended before the probes could test anything"
        assert answered == 5

        # Beyond one decoding and two queued, the last to arrive was refused at once: the call
        # with RESOURCE_EXHAUSTED, or on a stream that frame with a RESOURCE_EXHAUSTED
        # FrameError (the stream itself ends OK).
        def refusal(c):
            """The refusal's message if `c` ended refused, else None."""
            if not c.done():
                return None
            if rpc != "EnhanceStream":
                if code_of(c) != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    return None
                return c.exception().details()
            if c.exception() is not None:
                return None
            errors = [a.error for a in c.result()
                      if a.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]]
            return errors[0].message if errors else None

        def refused():
            return [message for message in map(refusal, calls) if message is not None]
        wait_for(refused, 60, lambda: "a refusal; the calls done ended "
                 f"{[code_of(c) for c in calls if c.done()]}")
        assert "reference decoding" in refused()[0]
        if rpc == "EnhanceStream":
            for stream in streams:
                stream.cancel()
            readers.shutdown()
            for connection in connections:
                connection.close()
        for c in calls:
            c.cancel()
