"""--max_stream_frames_in_flight: a stream whose caller writes and never reads holds at most
that many frames in the server; the rest wait in the caller's transport."""

import queue
import time

import grpc
import numpy as np
import pytest

from server_process import read_metric, rgb8, start_small_server
import fsrst_pb2
import fsrst_pb2_grpc

BOUND = 6
FRAMES = 200


def frame() -> fsrst_pb2.Image:
    return rgb8(np.full((32, 32, 3), 90, np.uint8))


@pytest.fixture()
def server():
    process = start_small_server("--model_instances=1", f"--max_stream_frames_in_flight={BOUND}",
                                 "--max_queue_size=128")
    yield process
    assert process.stop() == 0


def test_a_stream_that_is_never_read_holds_at_most_the_bound(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
    outbox = queue.Queue()
    for n in range(FRAMES):
        outbox.put(fsrst_pb2.EnhanceRequest(frame=frame(), sequence_number=n))
    call = stub.EnhanceStream(iter(outbox.get, None), timeout=120)  # answers are never read
    # Until the server stops taking frames: the frames it computed stay put for 2 s.
    highest_queue, last_change, seen = 0.0, time.time(), -1.0
    deadline = time.time() + 60
    while time.time() - last_change < 2.0:
        assert time.time() < deadline, "the server kept computing frames nobody reads"
        highest_queue = max(highest_queue, read_metric(server, "fsrst_queue_depth"))
        done = read_metric(server, "fsrst_frames_enhanced_total")
        if done != seen:
            seen, last_change = done, time.time()
        time.sleep(0.01)
    queued = read_metric(server, "fsrst_queue_depth")
    # The reactor reads a frame only while fewer than BOUND are unanswered: never more than
    # BOUND in the batcher's queue, and the server took far fewer than were written.
    assert highest_queue <= BOUND
    assert queued == 0  # computed; their answers wait for a reader
    assert 0 < seen < FRAMES / 2, f"the server computed {seen:.0f} of {FRAMES} unread frames"
    # Reading resumes the stream: every frame is answered, in order.
    outbox.put(None)
    answers = [a.sequence_number for a in call]
    assert answers == list(range(FRAMES))
    channel.close()
