"""Issue 19, the start-up and transport attacks, against the real fsrst_server binary: numeric
flags out of range, a second server on a port in use, a gzip decompression bomb, idle and slow
connections on /metrics, --metrics_host, a metrics port in use, build paths in --help, and
request sizes printed as sent. Each test failed on the code before its fix (see the commit
messages for how that was checked)."""

import os
import re
import socket
import subprocess
import threading
import urllib.error

import grpc
import numpy as np
import pytest

from server_process import (SERVER_BIN, ServerProcess, rgb8, scrape_metrics, small_model,
                            wait_for)
import fsrst_pb2
import fsrst_pb2_grpc
import health_pb2
import health_pb2_grpc

START_TIMEOUT_S = 120  # a server that does start is killed after this and the test fails


def start_and_wait(*flags: str) -> subprocess.CompletedProcess:
    """Runs the server with `flags`; a server that starts serving instead of refusing fails the
    test once START_TIMEOUT_S has passed."""
    try:
        return subprocess.run([SERVER_BIN, f"--model={small_model()}", "--host=127.0.0.1",
                               "--port=0", "--metrics_port=-1", "--device=cpu", *flags],
                              capture_output=True, text=True, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"fsrst_server {' '.join(flags)} did not refuse to start:\n{e.stderr}")


@pytest.mark.parametrize("flag,value,expected", [
    ("default_jpeg_quality", "0", "1..100"),
    ("default_jpeg_quality", "500", "1..100"),
    ("max_message_bytes", "4294967296", "4096..2147483647"),
    ("max_message_bytes", "2147483648", "4096..2147483647"),
    ("max_message_bytes", "0", "4096..2147483647"),
    ("max_image_pixels", "-1", "1..268435456"),
    ("max_batch_size", "0", "1..256"),
    ("max_queue_size", "0", "1..1000000"),
    ("port", "70000", "0..65535"),
    ("metrics_port", "-2", "-1..65535"),
    ("drain_timeout_s", "-1", "0..3600"),
    ("identity_ttl_s", "0", "1..316224000"),
    ("cache_bytes", "-1", "0..9223372036854775807"),
    ("max_pending_registrations", "0", "1..100000"),
    ("decode_threads", "0", "1..256"),
    ("metrics_threads", "0", "1..64"),
    ("metrics_request_timeout_ms", "10", "100..60000"),
    ("reference_store_connect_timeout_ms", "0", "1..60000"),
    ("reference_store_timeout_ms", "60001", "1..60000"),
    ("reference_store_revalidate_s", "0", "1..3600"),
    ("reference_store_threads", "0", "1..256"),
    ("max_queued_store_calls", "0", "1..100000"),
])
def test_an_out_of_range_numeric_flag_stops_the_start_naming_flag_value_and_range(
        flag, value, expected):
    result = start_and_wait(f"--{flag}={value}")
    assert result.returncode != 0
    assert f"--{flag}={value}: expected {expected}" in result.stderr, result.stderr
    assert "SERVING" not in result.stderr


def test_help_shows_no_build_paths():
    result = subprocess.run([SERVER_BIN, "--help"], capture_output=True, text=True, timeout=30)
    out = result.stdout + result.stderr
    sources = re.findall(r"Flags from (\S+):", out)
    assert sources, out
    for source in sources:
        assert "/" not in source, f"--help prints the build path {source}"


def test_a_second_server_on_a_port_in_use_fails_to_start():
    first = ServerProcess(small_model(), "--model_threads=1")
    try:
        result = start_and_wait("--model_threads=1", f"--port={first.port}")
        assert result.returncode != 0
        assert f"--port: cannot listen on 127.0.0.1:{first.port}" in result.stderr, \
            result.stderr
        assert "in use" in result.stderr
        assert "SERVING" not in result.stderr
    finally:
        assert first.stop() == 0


def test_a_metrics_port_in_use_names_the_port_and_the_reason():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = start_and_wait(f"--metrics_port={port}")
    assert result.returncode != 0
    assert f"--metrics_port: cannot serve /metrics on 127.0.0.1:{port}" in result.stderr, \
        result.stderr
    assert "Address already in use" in result.stderr
    assert "null context" not in result.stderr


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def test_a_gzip_bomb_is_refused_before_it_is_inflated():
    # 128 MiB of zeros travel as ~130 KB of gzip; --max_message_bytes is 1 MiB.
    server = ServerProcess(small_model(), "--model_threads=1", "--max_message_bytes=1048576")
    try:
        before = peak_rss_bytes(server.proc.pid)
        bomb = fsrst_pb2.EnhanceRequest(frame=fsrst_pb2.Image(
            encoding=fsrst_pb2.ENCODING_RGB8, data=bytes(128 << 20), width=32, height=32))
        with grpc.insecure_channel(f"127.0.0.1:{server.port}",
                                   compression=grpc.Compression.Gzip) as channel:
            with pytest.raises(grpc.RpcError) as error:
                fsrst_pb2_grpc.FaceSuperResolutionStub(channel).Enhance(bomb, timeout=60)
        del bomb
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED, error.value.details()
        grown = peak_rss_bytes(server.proc.pid) - before
        assert grown < 32 << 20, f"peak memory grew by {grown >> 20} MiB"
        # An uncompressed call on the same server is served.
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            frame = rgb8(np.zeros((32, 32, 3), np.uint8))
            answer = fsrst_pb2_grpc.FaceSuperResolutionStub(channel).Enhance(
                fsrst_pb2.EnhanceRequest(frame=frame), timeout=60)
        assert len(answer.image.data) == 128 * 128 * 3
    finally:
        assert server.stop() == 0


def test_request_sizes_are_printed_as_sent(server):
    frame = fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, data=b"", width=2147483648,
                            height=32)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.RpcError) as error:
            fsrst_pb2_grpc.FaceSuperResolutionStub(channel).Enhance(
                fsrst_pb2.EnhanceRequest(frame=frame), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "2147483648x32" in error.value.details()
    assert "-2147483648" not in error.value.details()


class Trickler:
    """Connections to the metrics port that send the start of a request, then one header byte
    every `period_s` (or nothing, period_s=None) and never finish it."""

    def __init__(self, port: int, count: int, period_s=None):
        self.sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        for s in self.sockets:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        self.closed_by_server = 0
        self.stop = threading.Event()
        self.thread = None
        if period_s is not None:
            self.thread = threading.Thread(target=self._trickle, args=(period_s,), daemon=True)
            self.thread.start()

    def _trickle(self, period_s):
        alive = list(self.sockets)
        while alive and not self.stop.wait(period_s):
            for s in list(alive):
                try:
                    s.sendall(b"X")
                except OSError:
                    alive.remove(s)
                    self.closed_by_server += 1

    def close(self):
        self.stop.set()
        if self.thread:
            self.thread.join()
        for s in self.sockets:
            s.close()


def test_idle_connections_do_not_black_out_scrapes():
    server = ServerProcess(small_model(), "--model_threads=1")
    idle = Trickler(server.metrics_port, 2)
    try:
        # Two idle connections once held every worker of /metrics for 30 s.
        for _ in range(3):
            assert "fsrst_model_info" in scrape_metrics(server, timeout=5)
    finally:
        idle.close()
        assert server.stop() == 0


def test_slow_connections_that_hold_every_metrics_worker_are_cut_off():
    # As many trickling connections as workers: a scrape waits until the request timeout
    # closes them. A byte every 0.2 s never lets a per-read timeout fire, so this holds only
    # if the timeout bounds the whole request.
    server = ServerProcess(small_model(), "--model_threads=1", "--metrics_threads=2",
                           "--metrics_request_timeout_ms=1000")
    slow = Trickler(server.metrics_port, 2, period_s=0.2)
    try:
        assert "fsrst_model_info" in scrape_metrics(server, timeout=15)
        wait_for(lambda: slow.closed_by_server >= 2, 15,
                 lambda: f"the server to close both trickling connections "
                         f"({slow.closed_by_server} closed)", poll_s=0.05)
        assert slow.closed_by_server == 2
    finally:
        slow.close()
        assert server.stop() == 0


def test_metrics_host_binds_the_metrics_port_on_its_own_address():
    server = ServerProcess(small_model(), "--model_threads=1", "--metrics_host=127.0.0.2")
    try:
        assert "fsrst_model_info" in scrape_metrics(server, "127.0.0.2", timeout=10)
        with pytest.raises(urllib.error.URLError):
            scrape_metrics(server, timeout=10)
        # The gRPC port stays on --host.
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert server.stop() == 0
