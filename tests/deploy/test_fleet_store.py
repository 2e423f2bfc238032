"""Issue 20, "Show it" 1: a fleet without client logic. Three fsrst_server replicas share one
real redis-server (--reference_store) behind Debian's nginx running deploy/nginx/fsrst-grpc.conf
(identity hash). A caller with nothing but the generated stubs registers 50 identities once,
through nginx, and then streams their frames while (a) one replica is SIGKILLed and started
again, (b) a fourth replica is added, (c) every replica is restarted in turn (SIGTERM, drain,
start). Counted at the caller: NOT_FOUND = 0, and every frame answered, or failed only with
UNAVAILABLE when its stream was cut. A second caller uses our Python client library: 0 errors
and 0 re-registrations. A third uses our C++ client library through its CLI without
references (so it cannot re-register): 0 errors.

Replicas listen on ports outside the kernel's ephemeral range (replica_port()): the test
keeps a replica's port across kills and restarts, and a port from that range could meanwhile
become the source port of one of the test's own connections, which makes the restart fail.

The fourth replica is in nginx's upstream list from the start (as a Kubernetes Service lists
endpoints as they become ready): until it listens, nginx skips it (connection refused, then
fail_timeout), so its identities are served by the next replica on the ring; once it is up,
they move to it, and it reads them through from the store."""

import collections
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

from deploy_util import Nginx, require_server_binary
from fsrst_client import FsrstClient
from redis_process import RedisProcess
from server_process import BUILD, ServerProcess, read_metric, small_model
import fsrst_pb2
import fsrst_pb2_grpc

IDENTITIES = [f"fleet-{i:02d}" for i in range(50)]
FRAMES_PER_STREAM = 4
CPP_CLIENT = os.path.join(BUILD, "clients", "cpp", "fsrst_client")


def rgb8(array):
    h, w, _ = array.shape
    return fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, data=array.tobytes(), width=w,
                           height=h)


class CppCaller:
    """Streams identities' frames with our C++ client library through its CLI
    (clients/cpp: `fsrst_client stream`, one process per stream), through nginx, until
    stopped. Without --ref: the library holds no references, so it cannot re-register, and a
    NOT_FOUND would stop the stream; it may only reopen streams a replica cut. Every stream
    that does not end with all its frames answered is an error."""

    def __init__(self, target, frames_dir, out_dir):
        self.target = target
        self.frames_dir = frames_dir
        self.out_dir = out_dir
        self.frames = 0
        self.reopens = 0
        self.errors = []
        self.stop = threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            identity = IDENTITIES[(i * 11) % len(IDENTITIES)]
            i += 1
            result = subprocess.run(
                [CPP_CLIENT, "stream", f"--server={self.target}", f"--identity={identity}",
                 f"--frames_dir={self.frames_dir}", f"--out_dir={self.out_dir}",
                 "--stream_timeout_ms=60000"], capture_output=True, text=True, timeout=120)
            done = re.search(rf"enhanced {FRAMES_PER_STREAM} of {FRAMES_PER_STREAM} frames .*"
                             r"\((\d+) stream reopens", result.stdout)
            if result.returncode == 0 and done:
                self.frames += FRAMES_PER_STREAM
                self.reopens += int(done.group(1))
            else:
                self.errors.append(f"{identity}: exit {result.returncode}: "
                                   f"{result.stdout.strip()} {result.stderr.strip()}")


def ephemeral_port_range():
    """The kernel's range of automatically chosen source ports (net.ipv4.ip_local_port_range)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(v) for v in f.read().split())
    return low, high


def replica_port():
    """A free port OUTSIDE the ephemeral range, for a replica that keeps its port while it is
    down. A port from that range (free_port()'s, the kernel's pick for port 0) can become the
    source port of one of the test's short connections while the replica is down: nginx opens
    one upstream connection per stream. As long as that connection lives, and for 60 s in
    TIME_WAIT after it, binding the port fails with EADDRINUSE (SO_REUSEADDR/SO_REUSEPORT do
    not help) and the replica exits on start. The kernel never picks a source port outside the
    range, so such a port stays free for the replica (another process could still bind it on
    purpose; then bind fails here and another is tried)."""
    low, high = ephemeral_port_range()
    candidates = list(range(max(1024, low - 16384), low)) + list(range(high + 1, 65536))
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(candidates)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port outside the ephemeral range")


class Replica:
    """One fsrst_server on a fixed port, so that it can be killed and started again there."""

    def __init__(self, redis_url, key_file):
        self.port = replica_port()
        self.flags = ["--model_threads=1", "--max_batch_size=2", f"--port={self.port}",
                      f"--reference_store={redis_url}", f"--reference_store_key_file={key_file}",
                      "--drain_timeout_s=5"]
        self.server = None

    def start(self, wait=True):
        self.server = ServerProcess(small_model(), *self.flags, wait=wait)
        return self

    def kill(self):
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait()
        self.server.log.close()

    def restart_gracefully(self):
        assert self.server.stop() == 0
        self.start()


class PlainCaller:
    """Streams every identity's frames with the generated stubs only, through nginx, until
    stopped; counts each frame's outcome by status code name, and keeps each cut stream's
    (phase of the test, code, details)."""

    def __init__(self, target, phase):
        self.phase = phase  # phase["name"]: what the test is doing to the fleet right now
        self.channel = grpc.insecure_channel(target)
        self.stub = fsrst_pb2_grpc.FaceSuperResolutionStub(self.channel)
        self.counts = collections.Counter()
        self.cuts = []
        self.frame_errors = collections.Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.frame = rgb8(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))

    def count(self, code, n=1):
        with self.lock:
            self.counts[code] += n

    def run(self):
        i = 0
        while not self.stop.is_set():
            identity = IDENTITIES[i % len(IDENTITIES)]
            i += 1
            requests = [fsrst_pb2.EnhanceRequest(identity_id=identity, frame=self.frame,
                                                 sequence_number=n)
                        for n in range(FRAMES_PER_STREAM)]
            answered = 0
            try:
                for response in self.stub.EnhanceStream(
                        iter(requests), timeout=60,
                        metadata=(("x-fsrst-identity", identity),)):
                    answered += 1
                    if response.HasField("error"):
                        code = next(c for c in grpc.StatusCode
                                    if c.value[0] == response.error.code).name
                        self.count(code)
                        with self.lock:
                            self.frame_errors[code] += 1
                    else:
                        self.count("OK")
            except grpc.RpcError as e:
                # The stream was cut: its unanswered frames fail with the call's code.
                self.count(e.code().name, FRAMES_PER_STREAM - answered)
                with self.lock:
                    self.cuts.append((self.phase["name"], e.code().name, e.details()))
                time.sleep(0.05)  # a plain caller's minimal backoff


def test_replica_ports_stay_out_of_the_kernels_source_ports():
    """Regression: the fleet test failed once because a replica restarted on its fixed port
    while a connection of the test itself used that port as its source port (see
    replica_port())."""
    low, high = ephemeral_port_range()
    for _ in range(50):
        port = replica_port()
        assert not low <= port <= high, f"port {port} is in the ephemeral range {low}-{high}"


def test_fleet_serves_every_identity_through_kills_scale_up_and_restarts(tmp_path):
    require_server_binary()
    key_file = tmp_path / "store.key"
    key_file.write_bytes(os.urandom(32))
    redis = RedisProcess()
    replicas = [Replica(redis.url, str(key_file)) for _ in range(4)]
    nginx = None
    callers = []
    callers_to_stop = []  # the C++ caller
    threads = []
    library_errors = []
    library_clients = []
    try:
        for r in replicas[:3]:
            r.start(wait=False)
        for r in replicas[:3]:
            r.server.wait_serving()
        nginx = Nginx([r.port for r in replicas], server_parameters="max_fails=1 fail_timeout=1s")
        target = f"127.0.0.1:{nginx.port}"

        # Register once, through nginx, with plain stubs; nothing is ever registered again.
        rng = np.random.default_rng(0)
        channel = grpc.insecure_channel(target)
        stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
        references = {}
        for identity in IDENTITIES:
            references[identity] = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
                                    for _ in range(2)]
            stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
                identity_id=identity, references=[rgb8(r) for r in references[identity]]),
                timeout=60, metadata=(("x-fsrst-identity", identity),))
        channel.close()
        assert len(redis.keys("fsrst:ref:*")) == len(IDENTITIES)

        phase = {"name": "steady"}
        callers = [PlainCaller(target, phase) for _ in range(2)]
        threads = [threading.Thread(target=c.run) for c in callers]

        # Our client library, which would re-register on NOT_FOUND: it must never need to.
        library = FsrstClient(target, timeout_s=60)
        library_clients.append(library)
        for identity in IDENTITIES:  # it learns the references, as its callers give them
            library.register_references(identity, references[identity])
        library_stop = threading.Event()
        library_frames = collections.Counter()

        def library_run():
            frame = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
            i = 0
            while not library_stop.is_set():
                identity = IDENTITIES[(i * 7) % len(IDENTITIES)]
                i += 1
                try:
                    for _ in library.enhance_stream(identity, [frame] * FRAMES_PER_STREAM,
                                                    timeout_s=60):
                        library_frames["OK"] += 1
                except Exception as e:  # noqa: BLE001 - every error counts against the library
                    library_errors.append(repr(e))

        threads.append(threading.Thread(target=library_run))

        # Our C++ client library, through its CLI, alongside.
        frames_dir = tmp_path / "frames"
        frames_dir.mkdir()
        frame_rng = np.random.default_rng(3)
        for n in range(FRAMES_PER_STREAM):
            (frames_dir / f"frame_{n}.rgb").write_bytes(
                frame_rng.integers(0, 256, (32, 32, 3), dtype=np.uint8).tobytes())
        cpp = CppCaller(target, str(frames_dir), str(tmp_path / "answers"))
        callers_to_stop.append(cpp)
        threads.append(threading.Thread(target=cpp.run))
        for t in threads:
            t.start()

        def served_frames():
            return sum(c.counts["OK"] for c in callers)

        def settle(frames=40):
            """Waits until the callers got `frames` more answers (polling, not sleeping)."""
            target_frames = served_frames() + frames
            deadline = time.monotonic() + 60
            while served_frames() < target_frames:
                assert time.monotonic() < deadline, f"no progress: {[c.counts for c in callers]}"
                time.sleep(0.05)

        settle()
        # (a) one replica SIGKILLed, then started again on its port.
        phase["name"] = "SIGKILL"
        replicas[0].kill()
        settle()
        replicas[0].start()
        settle()
        # (b) a fourth replica comes up; nginx moves its share of the ring to it.
        phase["name"] = "scale-up"
        replicas[3].start()
        settle()
        # (c) every replica restarted in turn.
        phase["name"] = "rolling restart"
        for r in replicas:
            r.restart_gracefully()
            settle()

        for c in callers + callers_to_stop:
            c.stop.set()
        library_stop.set()
        for t in threads:
            t.join(timeout=120)
        counts = collections.Counter()
        for c in callers:
            counts.update(c.counts)
        cuts = [cut for c in callers for cut in c.cuts]
        print("plain stub caller, frames by outcome:", dict(counts))
        print("plain stub caller, cut streams (phase, code, details):", cuts)
        print("client library: frames", dict(library_frames), "streams reopened",
              library.streams_reopened, "re-registrations", library.reregistrations)
        print("C++ client: frames", cpp.frames, "streams reopened", cpp.reopens, "errors",
              len(cpp.errors))
        read_throughs = sum(read_metric(r.server, "fsrst_reference_read_throughs_total",
                                        result="OK") for r in replicas)
        print("read-throughs on the replicas now running:", read_throughs)

        assert counts["NOT_FOUND"] == 0, dict(counts)
        assert set(counts) <= {"OK", "UNAVAILABLE", "INTERNAL", "CANCELLED"}, dict(counts)
        # A cut stream fails UNAVAILABLE (a refusal, nginx's 502, a drained replica), except
        # where a replica is SIGKILLed mid-stream: nginx, its answer headers already sent,
        # can only reset the stream, which gRPC reports as INTERNAL "Received RST_STREAM".
        # A rolling restart (SIGTERM, drain) must never cut a stream that way. It may end a
        # stream that reaches a replica as its gRPC server shuts down (after the drain) with
        # CANCELLED "CANCELLED": gRPC core's answer to a call no handler took yet
        # (grpc/grpc#41785); the call never ran, and both client libraries make it again.
        def expected_cut(phase_name, code, details):
            return code == "UNAVAILABLE" or (
                phase_name == "SIGKILL" and code == "INTERNAL" and "RST_STREAM" in details) or (
                phase_name == "rolling restart" and code == "CANCELLED"
                and details == "CANCELLED")
        assert all(expected_cut(*cut) for cut in cuts), cuts
        # ... and a frame answered inside a stream with an error is a refusal: UNAVAILABLE.
        frame_errors = collections.Counter()
        for c in callers:
            frame_errors.update(c.frame_errors)
        assert set(frame_errors) <= {"UNAVAILABLE"}, dict(frame_errors)
        assert counts["OK"] > 0
        assert library_errors == []
        assert library.reregistrations == 0
        assert library_frames["OK"] > 0
        assert cpp.errors == []
        assert cpp.frames > 0
        # The store did the work the client library used to do.
        assert read_throughs > 0
    finally:
        for c in callers + callers_to_stop:
            c.stop.set()
        for t in threads:
            t.join(timeout=120)
        for c in library_clients:
            c.close()
        if nginx is not None:
            nginx.stop()
        for r in replicas:
            if r.server is not None and r.server.proc.poll() is None:
                r.server.stop()
        redis.stop()
