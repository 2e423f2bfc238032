"""Soak: fsrst_server at 70% of capacity for 10 minutes while identities register, expire
and are deleted.

    /usr/bin/python3 tests/reliability/soak.py [--duration_s 600] [--json_out F]

Open-loop frames of 16 registered identities (fsrst_bench) run the whole time; beside
them a churn thread registers a new identity every --churn_period_s, enhances one frame
with it, and then deletes it, re-registers and deletes it, or leaves it to expire
(--identity_ttl_s). Checks:
- no errors, neither in the load nor in the churn;
- resident memory grows less than 5% from the end of the warm-up (--warmup_s) to the end;
- once every identity is deleted or expired, the cache holds 0 bytes and 0 entries
  (fsrst_reference_cache_bytes / _entries on /metrics), and the expirations were counted.
Prints a Markdown table; exits 1 if a check fails.
"""

import argparse
import itertools
import json
import os
import sys
import threading
import time

import grpc
import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
from server_process import ServerProcess, model_info, read_metric, rgb8  # noqa: E402
from reliability.load_tools import (RssSampler, add_common_arguments, bench,  # noqa: E402
                                    capacity_fps, finish)
import fsrst_pb2  # noqa: E402
import fsrst_pb2_grpc  # noqa: E402

BENCH_IDENTITIES = 16


class Churn:
    """Registers, uses and drops identities on a thread; counts what it did and any error."""

    def __init__(self, port: int, period_s: float):
        self.counts = {"registered": 0, "deleted": 0, "left_to_expire": 0, "enhanced": 0}
        self.errors = []
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._stub = fsrst_pb2_grpc.FaceSuperResolutionStub(self._channel)
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _register(self, rng, identity):
        self._stub.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
            identity_id=identity, references=[rgb8(128, rng) for _ in range(3)]), timeout=30)
        self.counts["registered"] += 1

    def _run(self):
        rng = np.random.default_rng(11)
        for n in itertools.count():
            if self._stop.wait(self._period_s):
                return
            identity = f"soak-{n}"
            try:
                self._register(rng, identity)
                self._stub.Enhance(fsrst_pb2.EnhanceRequest(identity_id=identity,
                                                            frame=rgb8(32, rng)), timeout=30)
                self.counts["enhanced"] += 1
                if n % 3 == 0:
                    self.counts["left_to_expire"] += 1
                    continue
                if n % 3 == 1:
                    self._register(rng, identity)  # replaces the references
                self._stub.DeleteReferences(
                    fsrst_pb2.DeleteReferencesRequest(identity_id=identity), timeout=30)
                self.counts["deleted"] += 1
            except grpc.RpcError as e:
                self.errors.append(f"{identity}: {e.code().name} {e.details()}")

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._channel.close()


def delete_bench_identities(port: int):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = fsrst_pb2_grpc.FaceSuperResolutionStub(channel)
        for i in range(BENCH_IDENTITIES):
            stub.DeleteReferences(fsrst_pb2.DeleteReferencesRequest(identity_id=f"bench-{i}"),
                                  timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser, duration_s=600)
    parser.add_argument("--warmup_s", type=float, default=60)
    parser.add_argument("--load_factor", type=float, default=0.7)
    parser.add_argument("--identity_ttl_s", type=int, default=20)
    parser.add_argument("--churn_period_s", type=float, default=0.5)
    args = parser.parse_args()

    server = ServerProcess(args.model, f"--max_batch_size={args.max_batch_size}",
                           f"--identity_ttl_s={args.identity_ttl_s}", *args.server_flags.split())
    try:
        port = server.port
        print("== capacity", flush=True)
        instances = int(model_info(server)["instances"])
        capacity = capacity_fps(port, args.max_batch_size, instances)
        rate = args.load_factor * capacity
        print(f"== {args.duration_s:g} s at {rate:.1f} frames/s with identity churn", flush=True)
        sampler = RssSampler(server.proc.pid, period_s=2.0)
        churn = Churn(port, args.churn_period_s)
        load = bench(port, "--mode=open", f"--rate={rate:.2f}", "--references=cached",
                     f"--identities={BENCH_IDENTITIES}", duration_s=args.duration_s, warmup_s=0)
        churn.stop()
        rss = sampler.stop()
        delete_bench_identities(port)
        expirations = read_metric(server, "fsrst_reference_cache_expirations_total")
        # The identities left to expire go within the TTL plus a janitor period.
        deadline = time.time() + args.identity_ttl_s + 10
        while time.time() < deadline and read_metric(server, "fsrst_reference_cache_entries"):
            time.sleep(0.5)
        cache_bytes = read_metric(server, "fsrst_reference_cache_bytes")
        cache_entries = read_metric(server, "fsrst_reference_cache_entries")
        expirations = read_metric(server, "fsrst_reference_cache_expirations_total")
    finally:
        code = server.stop()

    warm = [mib for t, mib in rss if t >= args.warmup_s]
    growth = (warm[-1] - warm[0]) / warm[0] if len(warm) >= 2 else float("nan")
    print(f"{load['frames_ok']} frames at {load['throughput_fps']:.1f} frames/s (offered "
          f"{rate:.1f}, capacity {capacity:.1f}); p50 {load['latency_ms']['p50']:.0f} ms, "
          f"p99 {load['latency_ms']['p99']:.0f} ms; churn {json.dumps(churn.counts)}")
    goals = [
        ("load errors", json.dumps(load["errors"]) if load["errors"] else "none", "none",
         not load["errors"]),
        ("churn errors", "; ".join(churn.errors[:3]) or "none", "none", not churn.errors),
        ("resident memory after warm-up: first, last, growth",
         f"{warm[0]:.0f} MiB, {warm[-1]:.0f} MiB, {growth:+.1%}" if warm else "no samples",
         "< 5%", bool(warm) and growth < 0.05),
        ("cache after every identity is gone: bytes, entries",
         f"{cache_bytes:.0f}, {cache_entries:.0f}", "0, 0", cache_bytes == 0 and cache_entries == 0),
        ("expirations counted", f"{expirations:.0f} (left to expire: "
         f"{churn.counts['left_to_expire']})", "= left to expire",
         expirations == churn.counts["left_to_expire"]),
        ("server exit code after SIGTERM", str(code), "0", code == 0),
    ]
    return finish(goals, args.json_out, {"capacity_fps": capacity, "rate_fps": rate,
                                         "load": load, "churn": churn.counts,
                                         "churn_errors": churn.errors, "rss_mib": rss})


if __name__ == "__main__":
    sys.exit(main())
