"""Faults against the real fsrst_server binary: a caller that cancels while its frame is
queued, a deadline that passes in the queue, a client process that vanishes mid-stream.
In each case the frame is not computed, the drop is counted on /metrics, and the server
goes on serving. (SIGTERM under load and missing or corrupt model files are in
tests/server/test_server_process.py.)

The server runs fsrst_x4_small on one thread with batches of one frame, so a queue of
N frames takes N forward passes and a frame sent behind them waits. A forward pass takes
5 ms on one fast host and 30 ms on another, so N is sized from a measured pass to hold
about two seconds of work: far longer than the 0.1 s the tests need the frame to wait."""

import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from server_process import read_metric, rgb8, start_small_server, wait_for
import fsrst_pb2
import fsrst_pb2_grpc
import health_pb2
import health_pb2_grpc

QUEUED_WORK_S = 2.0  # seconds of forward passes queued in front of the frame under test
MAX_QUEUE_SIZE = 4096
# A reference with detail (a blank one is refused).
REFERENCE = fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, width=2, height=2,
                            data=bytes([0, 0, 0, 255, 255, 255, 255, 255, 255, 0, 0, 0]))
FRAME = rgb8(np.zeros((32, 32, 3), np.uint8))


@pytest.fixture(scope="module")
def server():
    # One instance: the frames queued ahead run one at a time, in order.
    s = start_small_server("--model_instances=1", "--max_batch_size=1",
                           f"--max_queue_size={MAX_QUEUE_SIZE}")
    yield s
    s.stop()


@pytest.fixture
def client(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
    channel.close()


def counters(server):
    return {
        "enhanced": read_metric(server, "fsrst_frames_enhanced_total"),
        "cancelled": read_metric(server, "fsrst_frames_dropped_total", reason="cancelled"),
        "deadline": read_metric(server, "fsrst_frames_dropped_total", reason="deadline_exceeded"),
    }


@pytest.fixture(scope="module")
def ahead_count(server):
    """How many frames make QUEUED_WORK_S of work on this host: from the fastest of a few
    one-at-a-time calls (each includes the RPC, so the queue holds a little less)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
    stub.Enhance(fsrst_pb2.EnhanceRequest(frame=FRAME), timeout=60)  # warm-up
    passes = []
    for _ in range(5):
        start = time.perf_counter()
        stub.Enhance(fsrst_pb2.EnhanceRequest(frame=FRAME), timeout=60)
        passes.append(time.perf_counter() - start)
    channel.close()
    count = max(10, int(QUEUED_WORK_S / min(passes)))
    assert count < MAX_QUEUE_SIZE, f"one pass took {min(passes) * 1e3:.2f} ms"
    return count


def fill_queue(server, client, count, before):
    """count frames in flight; returns their futures once half of them wait in the queue
    (QUEUED_WORK_S / 2 of work: more than any deadline or cancel below needs). Waiting for all
    of them to arrive instead could find the queue drained on a loaded machine."""
    ahead = [client.Enhance.future(fsrst_pb2.EnhanceRequest(frame=FRAME), timeout=120)
             for _ in range(count)]
    wait_for(lambda: read_metric(server, "fsrst_queue_depth") >= count // 2, 30,
             "the frames to queue up (else the model drained them as fast as they came)",
             poll_s=0.01)
    return ahead


def test_a_frame_cancelled_while_queued_is_not_computed_and_is_counted(server, client,
                                                                       ahead_count):
    # The frame under test is the only one with an identity: its arrival is the one cache hit.
    client.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
        identity_id="behind", references=[REFERENCE]), timeout=60)
    hits = read_metric(server, "fsrst_reference_cache_hits_total")
    before = counters(server)
    ahead = fill_queue(server, client, ahead_count, before)
    behind = client.Enhance.future(fsrst_pb2.EnhanceRequest(identity_id="behind", frame=FRAME),
                                   timeout=60)
    wait_for(lambda: read_metric(server, "fsrst_reference_cache_hits_total") > hits, 30,
             "the cancelled call's frame to arrive (its cache hit)", poll_s=0.01)
    done = counters(server)["enhanced"] - before["enhanced"]
    assert done < ahead_count, "the frames ahead were done before the call was cancelled"
    assert behind.cancel(), "the call finished before it could be cancelled"
    for call in ahead:
        assert len(call.result().image.data) == 128 * 128 * 3
    wait_for(lambda: counters(server)["cancelled"] == before["cancelled"] + 1, 30,
             lambda: f"one cancelled drop: {before} -> {counters(server)}", poll_s=0.05)
    after = counters(server)
    assert after["enhanced"] == before["enhanced"] + ahead_count  # not ahead_count + 1
    assert after["deadline"] == before["deadline"]


def test_a_deadline_that_passes_in_the_queue_is_not_computed_and_is_counted(server, client,
                                                                            ahead_count):
    before = counters(server)
    ahead = fill_queue(server, client, ahead_count, before)
    with pytest.raises(grpc.RpcError) as error:
        client.Enhance(fsrst_pb2.EnhanceRequest(frame=FRAME), timeout=0.1)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for call in ahead:
        call.result()
    wait_for(lambda: counters(server)["deadline"] == before["deadline"] + 1, 30,
             lambda: f"one deadline drop: {before} -> {counters(server)}", poll_s=0.05)
    after = counters(server)
    assert after["enhanced"] == before["enhanced"] + ahead_count
    assert after["cancelled"] == before["cancelled"]


# A client that streams 16 frames, prints once two answers are back, then waits to be killed.
VANISHING_CLIENT = """
import sys, time
sys.path[:0] = {paths!r}
import grpc, fsrst_pb2, fsrst_pb2_grpc
frame = fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, data=bytes(32 * 32 * 3), width=32,
                        height=32)
def frames():
    for n in range(16):
        yield fsrst_pb2.EnhanceRequest(frame=frame, sequence_number=n)
    time.sleep(3600)
channel = grpc.insecure_channel("127.0.0.1:{port}")
answers = fsrst_pb2_grpc.FaceSuperResolutionStub(channel).EnhanceStream(frames())
for n, answer in enumerate(answers):
    if n == 1:
        print("two answers", flush=True)
"""


def test_a_client_that_vanishes_mid_stream_leaves_the_server_serving(server, client):
    before = counters(server)
    source = VANISHING_CLIENT.format(paths=[p for p in sys.path if p], port=server.port)
    vanishing = subprocess.Popen(["/usr/bin/python3", "-c", source], stdout=subprocess.PIPE,
                                 text=True)
    try:
        assert vanishing.stdout.readline().strip() == "two answers"
        assert read_metric(server, "fsrst_active_streams") == 1
    finally:
        vanishing.kill()
        vanishing.wait()
    # The stream ends on the server, and the frames still queued are dropped, not computed.
    wait_for(lambda: read_metric(server, "fsrst_active_streams") == 0, 30,
             "fsrst_active_streams 0", poll_s=0.05)
    wait_for(lambda: counters(server)["enhanced"] + counters(server)["cancelled"]
             == before["enhanced"] + before["cancelled"] + 16, 30,
             lambda: f"all 16 frames enhanced or cancelled: {before} -> {counters(server)}",
             poll_s=0.05)
    after = counters(server)
    assert after["cancelled"] > before["cancelled"]
    assert after["enhanced"] < before["enhanced"] + 16
    # And the server goes on serving.
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert len(client.Enhance(fsrst_pb2.EnhanceRequest(frame=FRAME), timeout=30).image.data) \
        == 128 * 128 * 3
