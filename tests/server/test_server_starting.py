"""While the model warms up the port is open: health says NOT_SERVING and calls are refused
UNAVAILABLE with the starting message; then SERVING, and the same call works. A signal during
start-up ends the process at once."""

import os
import signal
import time

import grpc
import numpy as np

from server_process import ROOT, ServerProcess, free_port, rgb8
import fsrst_pb2
import fsrst_pb2_grpc
import health_pb2
import health_pb2_grpc

LARGE_MODEL = os.path.join(ROOT, "model", "weights", "fsrst_x4.pt")
FRAME = rgb8(np.zeros((32, 32, 3), np.uint8))
# The model loads before the port opens; gRPC's default reconnect backoff (1 s, growing 1.6x)
# would let the first probe land seconds after the port opened, after a fast machine's warm-up
# (CI saw SERVING first). Retry the connection every 20 ms instead.
RECONNECT_PROMPTLY = [("grpc.initial_reconnect_backoff_ms", 20),
                      ("grpc.min_reconnect_backoff_ms", 20),
                      ("grpc.max_reconnect_backoff_ms", 20)]


def start_warming_server():
    """(server, channel to it). Warm-up runs every batch size 1..16 with and without references
    on one thread, with the larger model: many seconds during which the port is already open."""
    port = free_port()
    server = ServerProcess(LARGE_MODEL, "--model_instances=1", "--model_threads=1",
                           "--max_batch_size=16", f"--port={port}", wait=False)
    return server, grpc.insecure_channel(f"127.0.0.1:{port}", options=RECONNECT_PROMPTLY)


def health_once_listening(health, deadline: float):
    """The first health answer, once the port is open (None if it never opened)."""
    while time.time() < deadline:
        try:
            return health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError:
            time.sleep(0.01)  # still loading the model: the port is not open yet
    return None


def test_a_warming_server_is_not_serving_and_refuses_calls_as_unavailable():
    server, channel = start_warming_server()
    try:
        with channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
            deadline = time.time() + 300
            seen = [health_once_listening(health, deadline)]
            refusal = None
            while seen[-1] == health_pb2.HealthCheckResponse.NOT_SERVING and time.time() < deadline:
                if refusal is None:
                    try:
                        stub.Enhance(fsrst_pb2.EnhanceRequest(frame=FRAME), timeout=10)
                        refusal = "served while NOT_SERVING"
                    except grpc.RpcError as error:
                        refusal = (error.code(), error.details())
                seen.append(health_once_listening(health, deadline))
            assert seen[0] == health_pb2.HealthCheckResponse.NOT_SERVING, (
                f"the first health answer was {seen[0]}: warm-up ended before the first probe")
            assert seen[-1] == health_pb2.HealthCheckResponse.SERVING
            assert refusal == (grpc.StatusCode.UNAVAILABLE,
                               "the model is still loading or warming up; retry shortly")
            answer = stub.Enhance(fsrst_pb2.EnhanceRequest(frame=FRAME), timeout=60)
            assert len(answer.image.data) == 128 * 128 * 3
    finally:
        assert server.stop() == 0


def test_a_signal_during_warm_up_ends_the_process_without_waiting_for_the_warm_up():
    server, channel = start_warming_server()
    try:
        with channel:
            status = health_once_listening(health_pb2_grpc.HealthStub(channel), time.time() + 300)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING, (
                f"health said {status}: warm-up ended before the first probe")
        server.proc.send_signal(signal.SIGTERM)
        # Before the fix the process finished the warm-up, said SERVING, then drained.
        assert server.proc.wait(timeout=60) == 0
        log = server.output()
        assert "during start-up: nothing accepted yet, exiting" in log, log
        assert "SERVING" not in log, log
    finally:
        server.stop()
