"""Reruns issue 19's attacks on fsrst_server at a scale the unit suite does not, and prints
what they cost: peak memory, how long a frame or a probe waited, what was stored. For
docs/reliability/hardening.md; run it against the binary before and after a change.

  /usr/bin/python3 tests/reliability/hardening_attacks.py [--build_dir build] [--only NAME]

Each attack starts its own server (fsrst_x4_small, one model instance of one thread, so the
numbers do not depend on the core count) and stops it. Flags the binary does not know are
not passed (the bounds are then the server's defaults either way)."""

import argparse
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

import server_process  # noqa: E402
import fsrst_pb2  # noqa: E402
import fsrst_pb2_grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402
from test_registrations import TINY_REFS, Flood, code_of, jpeg_refs, own_connection  # noqa: E402

FRAME = server_process.rgb8(np.zeros((32, 32, 3), np.uint8))


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1)) / 1024


def start(*flags: str) -> server_process.ServerProcess:
    help_text = subprocess.run([server_process.SERVER_BIN, "--helpfull"], capture_output=True,
                               text=True).stdout
    known = [f for f in flags if f"--{f[2:].split('=')[0]}" in help_text]
    return server_process.ServerProcess(server_process.small_model(), "--model_instances=1",
                                        "--model_threads=1", *known)


def registration_flood() -> dict:
    """1,000 tiny registrations at once, and one Enhance on another connection 1 s later."""
    server = start()
    try:
        base = peak_rss_mib(server.proc.pid)
        flood = Flood(server.port, "flood", 1000, TINY_REFS, timeout=300)
        time.sleep(1.0)
        with own_connection(server.port) as other:
            stub = fsrst_pb2_grpc.FaceSuperResolutionStub(other)
            began = time.time()
            try:
                stub.Enhance(fsrst_pb2.EnhanceRequest(frame=FRAME), timeout=60)
                enhance = f"OK after {time.time() - began:.2f} s"
            except grpc.RpcError as e:
                enhance = f"{e.code().name} after {time.time() - began:.2f} s"
        codes = [code_of(c) for c in flood.calls]
        flood.close()
        return {"enhance_during_flood": enhance,
                "registrations": {k.name: codes.count(k) for k in set(codes)},
                "peak_rss_mib": f"{base:.0f} -> {peak_rss_mib(server.proc.pid):.0f}"}
    finally:
        server.stop()


def deadline_store() -> dict:
    """600 registrations with a 1 s deadline: how many are stored although the caller failed."""
    server = start("--max_pending_registrations=1000", "--max_queued_decodes=1000")
    try:
        flood = Flood(server.port, "d", 600, TINY_REFS, timeout=1.0)
        codes = [code_of(c) for c in flood.calls]
        flood.close()
        # Let whatever the server still does finish: the encode count stops moving.
        last, still = -1.0, 0
        while still < 4:
            now = server_process.read_metric(
                server, "fsrst_reference_encode_duration_seconds_count")
            still = still + 1 if now == last else 0
            last = now
            time.sleep(0.5)
        stored_but_failed = 0
        with own_connection(server.port) as channel:
            stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
            for i, code in enumerate(codes):
                try:
                    stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id=f"d-{i}", frame=FRAME),
                                 timeout=60)
                    stored = True
                except grpc.RpcError:
                    stored = False
                if stored and code != grpc.StatusCode.OK:
                    stored_but_failed += 1
        return {"answers": {k.name: codes.count(k) for k in set(codes)},
                "encodes": last, "stored_although_the_caller_failed": stored_but_failed}
    finally:
        server.stop()


def drain() -> dict:
    """1,000 registrations queued, SIGTERM with --drain_timeout_s=3: seconds until exit."""
    server = start("--drain_timeout_s=3", "--max_pending_registrations=2000",
                   "--max_queued_decodes=2000")
    flood = Flood(server.port, "drain", 1000, TINY_REFS, timeout=300)
    time.sleep(4.0)
    began = time.time()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait()
    exited = time.time() - began
    codes = [code_of(c) for c in flood.calls]
    flood.close()
    server.stop()
    return {"exit_after_sigterm_s": round(exited, 1),
            "answers": {k.name: codes.count(k) for k in set(codes)},
            "log": server.output().strip().splitlines()[-1]}


def large_references() -> dict:
    """4 callers, 8 JPEG references of 4096x4096 each; a 1 s health probe every second, 10 s."""
    server = start()
    refs = jpeg_refs(8, 4096)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
        calls = [stub.RegisterReferences.future(fsrst_pb2.RegisterReferencesRequest(
            identity_id=f"large-{i}", references=refs), timeout=300) for i in range(4)]
        failed = 0
        with own_connection(server.port) as probe_channel:
            health = health_pb2_grpc.HealthStub(probe_channel)
            for _ in range(10):
                began = time.time()
                try:
                    health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.RpcError:
                    failed += 1
                time.sleep(max(0.0, 1.0 - (time.time() - began)))
        codes = [code_of(c) if c.done() else None for c in calls]
        for c in calls:
            c.cancel()
        channel.close()
        return {"readiness_probes_failed": f"{failed} of 10",
                "registrations_done_after_10_s": {str(k): codes.count(k) for k in set(codes)}}
    finally:
        server.stop()


def gzip_bomb() -> dict:
    """4 concurrent Enhance requests of 256 MiB of zeros, gzip-compressed (~260 KB each)."""
    server = start()
    try:
        base = peak_rss_mib(server.proc.pid)
        bomb = fsrst_pb2.EnhanceRequest(frame=fsrst_pb2.Image(
            encoding=fsrst_pb2.ENCODING_RGB8, data=bytes(256 << 20), width=32, height=32))
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}",
                                        compression=grpc.Compression.Gzip)
        stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(
                lambda _: code_of(stub.Enhance.future(bomb, timeout=120)), range(4)))
        channel.close()
        return {"answers": [c.name for c in codes],
                "peak_rss_mib": f"{base:.0f} -> {peak_rss_mib(server.proc.pid):.0f}"}
    finally:
        server.stop()


def idle_metrics() -> dict:
    """Two connections that send half a request and stay; then 3 scrapes with a 5 s timeout."""
    server = start()
    try:
        idle = [socket.create_connection(("127.0.0.1", server.metrics_port)) for _ in range(2)]
        for s in idle:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        ok = 0
        for _ in range(3):
            try:
                server_process.scrape_metrics(server, timeout=5)
                ok += 1
            except Exception:
                pass
        for s in idle:
            s.close()
        return {"scrapes_answered": f"{ok} of 3"}
    finally:
        server.stop()


ATTACKS = {"registration_flood": registration_flood, "deadline_store": deadline_store,
           "drain": drain, "large_references": large_references, "gzip_bomb": gzip_bomb,
           "idle_metrics": idle_metrics}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build_dir", default=server_process.BUILD)
    parser.add_argument("--only", choices=sorted(ATTACKS))
    args = parser.parse_args()
    server_process.SERVER_BIN = os.path.join(os.path.abspath(args.build_dir), "server",
                                             "fsrst_server")
    for name, attack in ATTACKS.items():
        if args.only and name != args.only:
            continue
        print(json.dumps({"attack": name, **attack()}), flush=True)


if __name__ == "__main__":
    main()
