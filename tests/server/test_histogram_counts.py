"""Every histogram on /metrics counts exactly the events it claims to: a known mix of calls
moves each family's _count (and fsrst_batch_size's _sum) by exactly what was sent."""

import concurrent.futures
import queue

import grpc
import numpy as np
import pytest

from server_process import ServerProcess, read_metric, rgb8, start_small_server
import fsrst_pb2

RNG = np.random.default_rng(11)
HISTOGRAMS = ("fsrst_queue_duration_seconds", "fsrst_inference_duration_seconds",
              "fsrst_reference_encode_duration_seconds", "fsrst_refused_duration_seconds")
RPCS = ("RegisterReferences", "Enhance", "EnhanceStream", "DeleteReferences", "GetServerInfo")


def counts(server: ServerProcess) -> dict:
    out = {name: read_metric(server, name + "_count") for name in HISTOGRAMS}
    out.update({rpc: read_metric(server, "fsrst_request_duration_seconds_count", rpc=rpc)
                for rpc in RPCS})
    out["batches"] = read_metric(server, "fsrst_batch_size_count")
    out["batched_frames"] = read_metric(server, "fsrst_batch_size_sum")
    return out


def rise(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in after}


@pytest.fixture(scope="module")
def server():
    # One single-threaded instance and a queue of one frame: a burst is partly refused.
    process = start_small_server("--model_instances=1", "--max_queue_size=1",
                                 "--max_batch_size=4")
    yield process
    assert process.stop() == 0


def test_registrations_calls_and_streams_are_each_counted_once(server, stub):
    before = counts(server)
    stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
        identity_id="a", references=[rgb8(128, RNG) for _ in range(3)]), timeout=60)
    stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
        identity_id="b", references=[rgb8(128, RNG) for _ in range(2)]), timeout=60)
    for _ in range(5):  # one at a time: five batches of one
        stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id="a", frame=rgb8(32, RNG)), timeout=60)
    # A stream of four frames, each sent once the one before is answered (the queue holds one).
    outbox = queue.Queue()
    stream = stub.EnhanceStream(iter(outbox.get, None), timeout=60)
    answers = []
    for i in range(4):
        outbox.put(fsrst_pb2.EnhanceRequest(identity_id="b", frame=rgb8(32, RNG),
                                            sequence_number=i))
        answers.append(next(stream))
    outbox.put(None)
    assert list(stream) == []
    assert [a.sequence_number for a in answers] == [0, 1, 2, 3]
    assert [a.error.message for a in answers if a.HasField("error")] == []
    stub.GetServerInfo(fsrst_pb2.GetServerInfoRequest(), timeout=10)
    stub.DeleteReferences(fsrst_pb2.DeleteReferencesRequest(identity_id="b"), timeout=10)
    moved = rise(before, counts(server))
    assert moved["fsrst_reference_encode_duration_seconds"] == 2  # one per registration
    assert moved["RegisterReferences"] == 2
    assert moved["Enhance"] == 5
    assert moved["EnhanceStream"] == 1  # the call, not its frames
    assert moved["GetServerInfo"] == 1 and moved["DeleteReferences"] == 1
    assert moved["fsrst_queue_duration_seconds"] == 9  # every frame once
    assert moved["batched_frames"] == 9
    assert moved["batches"] == 9  # one frame at a time
    assert moved["fsrst_inference_duration_seconds"] == moved["batches"]
    assert moved["fsrst_refused_duration_seconds"] == 0


def test_refused_calls_are_counted_once_each_and_nothing_else_is(server, stub):
    stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
        identity_id="c", references=[rgb8(128, RNG)]), timeout=60)
    before = counts(server)
    burst = 24

    def call(_):
        try:
            stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id="c", frame=rgb8(32, RNG)),
                         timeout=120)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    with concurrent.futures.ThreadPoolExecutor(burst) as pool:
        codes = list(pool.map(call, range(burst)))
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    accepted = codes.count(grpc.StatusCode.OK)
    assert refused + accepted == burst, codes
    # One instance, one queued frame: most of a simultaneous burst cannot be taken.
    assert refused > 0
    moved = rise(before, counts(server))
    assert moved["fsrst_refused_duration_seconds"] == refused
    assert moved["Enhance"] == burst
    assert moved["fsrst_queue_duration_seconds"] == accepted
    assert moved["batched_frames"] == accepted
    assert moved["fsrst_inference_duration_seconds"] == moved["batches"]
    assert moved["fsrst_reference_encode_duration_seconds"] == 0
