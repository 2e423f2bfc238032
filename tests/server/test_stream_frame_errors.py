"""A stream's frames are refused one by one, in their own answers, and the stream goes on:
RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE once the server drains."""

import queue
import signal

import grpc
import numpy as np

from server_process import ServerProcess, rgb8, small_model, wait_for
import fsrst_pb2
import fsrst_pb2_grpc

FRAME = rgb8(np.full((32, 32, 3), 120, np.uint8))


def test_frames_beyond_a_full_queue_are_refused_alone_and_the_stream_goes_on():
    server = ServerProcess(small_model(), "--model_instances=1", "--model_threads=1",
                           "--max_queue_size=1", "--max_batch_size=1")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
            frames = [fsrst_pb2.EnhanceRequest(frame=FRAME, sequence_number=n) for n in range(16)]
            answers = list(stub.EnhanceStream(iter(frames), timeout=120))
    finally:
        assert server.stop() == 0
    assert [a.sequence_number for a in answers] == list(range(16))
    refused = [a for a in answers if a.HasField("error")]
    served = [a for a in answers if not a.HasField("error")]
    # 16 frames at once, one running and one queued at most: most are refused.
    assert refused and served
    for answer in refused:
        assert answer.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert answer.error.message.startswith("the frame queue is full (max_queue_size=1")
        assert not answer.image.data
    assert all(len(a.image.data) == 128 * 128 * 3 for a in served)


def test_frames_sent_after_sigterm_are_refused_unavailable_and_earlier_ones_answered():
    server = ServerProcess(small_model(), "--model_instances=1", "--model_threads=1",
                           "--drain_timeout_s=30")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
        outbox = queue.Queue()
        stream = stub.EnhanceStream(iter(outbox.get, None), timeout=120)
        outbox.put(fsrst_pb2.EnhanceRequest(frame=FRAME, sequence_number=0))
        first = next(stream)
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "draining" in server.output(), 30,
                 lambda: f"the server to log draining:\n{server.output()}", poll_s=0.01)
        for n in (1, 2):
            outbox.put(fsrst_pb2.EnhanceRequest(frame=FRAME, sequence_number=n))
        late = [next(stream), next(stream)]
        outbox.put(None)
        rest = list(stream)
    assert server.proc.wait(timeout=60) == 0
    server.stop()
    assert not first.HasField("error") and len(first.image.data) == 128 * 128 * 3
    assert [a.sequence_number for a in late] == [1, 2] and rest == []
    for answer in late:
        assert answer.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert answer.error.message == "the server is shutting down; retry on another replica"
