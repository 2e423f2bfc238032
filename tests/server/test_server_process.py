"""The fsrst_server binary end to end: output equals the model run directly,
health, metrics text, shutdown on SIGTERM, startup failures."""

import concurrent.futures
import os
import shutil
import signal
import subprocess

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from server_process import (SERVER_BIN, ServerProcess, read_metric, rgb8, scrape_metrics,
                            small_model, wait_for)
from fsrst.export import read_metadata
import fsrst_pb2
import fsrst_pb2_grpc
import health_pb2
import health_pb2_grpc

RNG = np.random.default_rng(7)


def stub(port: int):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return fsrst_pb2_grpc.FaceSuperResolutionStub(channel), channel


def health_status(port: int, timeout: float = 5.0):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout).status


@pytest.mark.parametrize("variant", ["fsrst_x4_small", "fsrst_x4"])
def test_served_output_equals_the_model_run_directly(variant):
    path = os.path.join(os.path.dirname(small_model()), variant + ".pt")
    server = ServerProcess(path, "--model_threads=1")
    try:
        client, channel = stub(server.port)
        refs = [RNG.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(3)]
        frames = [RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
        client.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
            identity_id="person-1", references=[rgb8(r) for r in refs]), timeout=60)
        served = []
        for frame in frames:
            response = client.Enhance(fsrst_pb2.EnhanceRequest(
                identity_id="person-1", frame=rgb8(frame)), timeout=60)
            assert response.image.encoding == fsrst_pb2.ENCODING_RGB8
            served.append(np.frombuffer(response.image.data, np.uint8).reshape(128, 128, 3))
        channel.close()
    finally:
        assert server.stop() == 0

    module = torch.jit.load(path)
    luma = torch.stack([torch.from_numpy(np.asarray(Image.fromarray(r).convert("YCbCr").split()[0],
                                                    dtype=np.float32) / 255.0)[None]
                        for r in refs])
    lr = torch.stack([torch.from_numpy(f.astype(np.float32) / 255.0).permute(2, 0, 1)
                      for f in frames])
    with torch.no_grad():
        feats = module.encode_references(luma)[None].expand(3, -1, -1, -1, -1)
        out = module(lr, feats, torch.ones(3, 3, dtype=torch.bool))
    direct = (out.permute(0, 2, 3, 1).numpy() * 255.0).round().clip(0, 255).astype(np.int16)
    for i in range(3):
        diff = np.abs(served[i].astype(np.int16) - direct[i]).max()
        assert diff <= 1, f"frame {i}: max abs difference {diff}/255"


def test_health_is_serving_and_reflection_lists_the_service(server):
    assert health_status(server.port) == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        # Server reflection: the v1alpha ServerReflectionInfo stream answers list_services.
        method = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        # ServerReflectionRequest{list_services: "*"}: field 7, string "*".
        answer = b"".join(method(iter([b"\x3a\x01*"]), timeout=10))
    assert b"fsrst.v1.FaceSuperResolution" in answer


def test_metrics_pass_promtool(server):
    client, channel = stub(server.port)
    client.Enhance(fsrst_pb2.EnhanceRequest(frame=rgb8(np.zeros((32, 32, 3), np.uint8))),
                   timeout=30)
    channel.close()
    text = scrape_metrics(server)
    for name in ("fsrst_requests_total", "fsrst_request_duration_seconds_bucket",
                 "fsrst_queue_duration_seconds_bucket", "fsrst_inference_duration_seconds_bucket",
                 "fsrst_batch_size_bucket", "fsrst_frames_enhanced_total", "fsrst_queue_depth",
                 "fsrst_active_streams", "fsrst_reference_cache_entries",
                 "fsrst_reference_cache_bytes", "fsrst_reference_cache_hits_total",
                 "fsrst_reference_cache_misses_total", "fsrst_reference_cache_evictions_total",
                 "fsrst_model_info"):
        assert name in text, name
    assert 'fsrst_requests_total{code="OK",rpc="Enhance"} 1' in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is not installed"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_sigterm_answers_every_accepted_frame_then_exits_zero():
    # One instance of one thread, batches of 2: 400 frames make a queue that takes a while,
    # even on a machine that runs a batch in a few milliseconds (40 frames drained there before
    # the metrics showed them all arrived). The queue bound is raised to hold them all.
    sent = 400
    server = ServerProcess(small_model(), "--model_instances=1", "--model_threads=1",
                           "--max_batch_size=2", "--drain_timeout_s=60",
                           f"--max_queue_size={sent}")
    client, channel = stub(server.port)
    frame = rgb8(np.full((32, 32, 3), 100, np.uint8))
    futures = [client.Enhance.future(fsrst_pb2.EnhanceRequest(frame=frame), timeout=120)
               for _ in range(sent)]
    # Every frame accepted (done + queued; at most one batch runs, so the sum reaches `sent`
    # only once all arrived), and some still queued when the signal comes.
    def queued_once_all_arrived():
        queued = read_metric(server, "fsrst_queue_depth")
        done = read_metric(server, "fsrst_frames_enhanced_total")
        return [queued] if done + queued >= sent else None
    (queued,) = wait_for(queued_once_all_arrived, 60, "every frame to reach the server",
                         poll_s=0.01)
    assert queued > 0, "the queue was empty before the signal: nothing to drain"
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining" in server.output(), 30,
             lambda: f"the server to log draining:\n{server.output()}", poll_s=0.01)
    # A call after the signal, on the open connection, is refused by the draining server.
    with pytest.raises(grpc.RpcError) as late:
        client.Enhance(fsrst_pb2.EnhanceRequest(frame=frame), timeout=60)
    # Every accepted call is answered with a whole image, none refused or lost.
    sizes = [len(f.result().image.data) for f in futures]
    channel.close()
    assert server.proc.wait(timeout=60) == 0
    assert late.value.code() == grpc.StatusCode.UNAVAILABLE
    assert late.value.details() == "the server is shutting down; retry on another replica"
    assert sizes == [128 * 128 * 3] * sent
    assert "drained, exiting" in server.output()
    server.stop()


def test_missing_model_exits_nonzero_with_a_clear_error():
    server = ServerProcess("/nonexistent/model.pt", wait=False)
    assert server.proc.wait(timeout=30) != 0
    assert "cannot open the file" in server.output()
    server.stop()


def test_corrupt_model_exits_nonzero_and_never_serves(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip" * 100)
    server = ServerProcess(str(path), wait=False)
    assert server.proc.wait(timeout=30) != 0
    assert "not a loadable TorchScript file" in server.output()
    assert "SERVING" not in server.output()
    server.stop()


def test_help_documents_every_flag():
    result = subprocess.run([SERVER_BIN, "--help"], capture_output=True, text=True)
    out = result.stdout + result.stderr
    for flag in ("--model", "--device", "--port", "--metrics_port", "--max_batch_size",
                 "--max_queue_delay_us", "--max_queue_size", "--cache_bytes", "--identity_ttl_s",
                 "--max_stream_frames_in_flight", "--max_message_bytes", "--drain_timeout_s",
                 "--reference_store", "--reference_store_key_file",
                 "--reference_store_password_file", "--reference_store_key_prefix",
                 "--reference_store_connect_timeout_ms", "--reference_store_timeout_ms",
                 "--reference_store_revalidate_s", "--reference_store_threads",
                 "--max_queued_store_calls"):
        assert flag in out, flag


def test_model_metadata_matches_server_info(server):
    client, channel = stub(server.port)
    info = client.GetServerInfo(fsrst_pb2.GetServerInfoRequest(), timeout=10)
    channel.close()
    metadata = read_metadata(small_model())
    assert info.model_name == metadata["name"]
    assert info.lr_size == metadata["lr_size"] and info.scale == metadata["scale"]
    assert info.max_references == metadata["max_references"]


def thread_nice_values(pid: int) -> list:
    values = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        values.append(int(fields[16]))  # field 19 of stat: nice
    return values


def test_model_instances_run_at_the_lower_priority_and_the_rest_does_not():
    server = ServerProcess(small_model(), "--model_instances=3", "--model_threads=1",
                           "--model_nice=7", "--decode_threads=2")
    try:
        nice = thread_nice_values(server.proc.pid)
        # One worker thread per instance and every reference decode thread are niced 7 more
        # than the process (which starts at this test's nice value: 0 in CI, more under
        # `nice`); gRPC, metrics and main threads are not.
        base = os.nice(0)
        assert nice.count(min(base + 7, 19)) == 3 + 2, (base, nice)
        assert nice.count(base) >= 2, (base, nice)
        text = scrape_metrics(server)
        assert 'instances="3"' in text and 'threads="1"' in text
    finally:
        assert server.stop() == 0


def test_model_nice_out_of_range_is_a_clear_startup_error():
    result = subprocess.run([SERVER_BIN, f"--model={small_model()}", "--port=0",
                             "--metrics_port=-1", "--model_nice=20"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "--model_nice=20: expected 0..19" in result.stderr
