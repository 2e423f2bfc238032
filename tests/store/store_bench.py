"""Issue 20, 'Show it' 5: what the shared store costs, measured (a benchmark, not a test: pytest
does not collect it). Prints the figures docs/store.md quotes.

  FSRST_BUILD_DIR=$PWD/build /usr/bin/python3 tests/store/store_bench.py [--model PATH]

1. First frame of an identity on a replica that never saw it, read through the store either
   from the features its registration stored for this model version (one store read, no
   encode) or, for identities whose features of this version are not stored (registered by
   a replica of another version: here their field is removed with HDEL), from its references
   (a store read, then one encode as a batcher job, and a write-back) vs the next frame (a
   local hit): latency of one Enhance, p50/p99 over N identities of each kind, one call at a
   time, measured at a Python caller. The replica's counters confirm which path each took.
2. Steady-state throughput with the store on vs off: fsrst_bench (closed loop, cached
   references, all local hits after the warm-up) against one server without --reference_store
   and one with it, alternated ROUNDS times (the machine is shared; alternating spreads the
   noise over both).
3. Forgetting: from a DeleteReferences on one replica (or a DEL that no message announces)
   until another replica that had the identity cached answers NOT_FOUND."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [TESTS, os.path.join(TESTS, "deploy")]
from deploy_util import start_small_server  # noqa: E402
from redis_process import RedisProcess  # noqa: E402
from server_process import BENCH_BIN, ServerProcess, model_info, read_metric, small_model  # noqa: E402,E501
import fsrst_pb2  # noqa: E402
import fsrst_pb2_grpc  # noqa: E402


def rgb8(array):
    h, w, _ = array.shape
    return fsrst_pb2.Image(encoding=fsrst_pb2.ENCODING_RGB8, data=array.tobytes(), width=w,
                           height=h)


def percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def store_replicas(count, redis, key_file):
    """`count` fsrst_x4_small replicas on one model thread, sharing `redis`, started side by
    side (they load in parallel) and each SERVING."""
    servers = [start_small_server(f"--reference_store={redis.url}",
                                  f"--reference_store_key_file={key_file}", wait=False)
               for _ in range(count)]
    for server in servers:
        server.wait_serving()
    return servers


def first_frame_vs_hit(redis, key_file, identities):
    a, b = store_replicas(2, redis, key_file)
    try:
        info = model_info(b)
        features_field = f"f:{info['model']}@{info['version']}"
        rng = np.random.default_rng(5)
        stub_a = fsrst_pb2_grpc.FaceSuperResolutionStub(grpc.insecure_channel(f"127.0.0.1:{a.port}"))
        stub_b = fsrst_pb2_grpc.FaceSuperResolutionStub(grpc.insecure_channel(f"127.0.0.1:{b.port}"))
        frame = rgb8(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        kinds = ["features", "references"]
        for i in range(2 * identities):
            stub_a.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
                identity_id=f"bench-{i}", references=[
                    rgb8(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)) for _ in range(3)]),
                timeout=60)
            if kinds[i % 2] == "references":
                assert redis.cli("HDEL", f"fsrst:ref:/bench-{i}", features_field) == b"1"
        first = {kind: [] for kind in kinds}
        hit = []
        for i in range(2 * identities):
            request = fsrst_pb2.EnhanceRequest(identity_id=f"bench-{i}", frame=frame)
            start = time.perf_counter()
            stub_b.Enhance(request, timeout=60)
            first[kinds[i % 2]].append(time.perf_counter() - start)
            start = time.perf_counter()
            stub_b.Enhance(request, timeout=60)
            hit.append(time.perf_counter() - start)
        # The figures are only what they say if each first frame took the path claimed.
        assert read_metric(b, "fsrst_reference_stored_features_used_total") == identities
        assert read_metric(b, "fsrst_reference_reencodes_total") == identities
        return {"identities_per_kind": identities,
                "read_through_stored_features_ms": {"p50": percentile(first["features"], 50),
                                                    "p99": percentile(first["features"], 99)},
                "read_through_reencode_ms": {"p50": percentile(first["references"], 50),
                                             "p99": percentile(first["references"], 99)},
                "local_hit_ms": {"p50": percentile(hit, 50), "p99": percentile(hit, 99)}}
    finally:
        a.stop()
        b.stop()


def forgetting(redis, key_file, trials):
    """Seconds from a DeleteReferences on replica A (or a DEL behind the replicas' back, which
    no message announces) until replica B, which had the identity cached, answers NOT_FOUND;
    B polls every 10 ms. Default --reference_store_revalidate_s (5)."""
    a, b = store_replicas(2, redis, key_file)
    rng = np.random.default_rng(6)
    stub_a = fsrst_pb2_grpc.FaceSuperResolutionStub(grpc.insecure_channel(f"127.0.0.1:{a.port}"))
    stub_b = fsrst_pb2_grpc.FaceSuperResolutionStub(grpc.insecure_channel(f"127.0.0.1:{b.port}"))
    frame = rgb8(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    times = {"delete_rpc_s": [], "missed_message_s": []}
    try:
        for trial in range(trials):
            for kind in times:
                identity = f"{kind}-{trial}"
                stub_a.RegisterReferences(fsrst_pb2.RegisterReferencesRequest(
                    identity_id=identity,
                    references=[rgb8(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))]),
                    timeout=60)
                request = fsrst_pb2.EnhanceRequest(identity_id=identity, frame=frame)
                stub_b.Enhance(request, timeout=60)  # cached on b now
                start = time.perf_counter()
                if kind == "delete_rpc_s":
                    stub_a.DeleteReferences(
                        fsrst_pb2.DeleteReferencesRequest(identity_id=identity), timeout=60)
                else:
                    redis.cli("DEL", f"fsrst:ref:/{identity}")
                while True:
                    try:
                        stub_b.Enhance(request, timeout=60)
                    except grpc.RpcError as e:
                        assert e.code() == grpc.StatusCode.NOT_FOUND, e
                        break
                    time.sleep(0.01)
                times[kind].append(time.perf_counter() - start)
        return {k: {"max": max(v), "median": float(np.median(v)), "trials": len(v)}
                for k, v in times.items()}
    finally:
        a.stop()
        b.stop()


def bench(server, duration_s, concurrency):
    out = tempfile.mktemp(suffix=".json")
    subprocess.run([BENCH_BIN, f"--server=127.0.0.1:{server.port}", "--mode=closed",
                    f"--concurrency={concurrency}", "--identities=8", "--references=cached",
                    f"--duration_s={duration_s}", "--warmup_s=3", "--progress=false",
                    f"--json_out={out}"], check=True, capture_output=True)
    with open(out) as f:
        return json.load(f)


def throughput_on_vs_off(model, redis, key_file, rounds, duration_s, concurrency):
    results = {"off": [], "on": []}
    for _ in range(rounds):
        for label, flags in (("off", []), ("on", [f"--reference_store={redis.url}",
                                                  f"--reference_store_key_file={key_file}"])):
            server = ServerProcess(model, *flags)
            try:
                report = bench(server, duration_s, concurrency)
            finally:
                server.stop()
            summary = report.get("summary", report)
            results[label].append(summary["throughput_fps"])
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    return {"rounds_fps": results, "mean_fps": mean, "on_over_off": mean["on"] / mean["off"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=small_model(), help="of the throughput runs; the "
                        "first-frame and forgetting runs use fsrst_x4_small")
    parser.add_argument("--identities", type=int, default=100, help="of each kind")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration_s", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--only", choices=["first_frame", "throughput", "forgetting"])
    args = parser.parse_args()
    redis = RedisProcess()
    key_file = tempfile.mktemp(suffix=".key")
    with open(key_file, "wb") as f:
        f.write(os.urandom(32))
    try:
        print(json.dumps({"model": os.path.basename(args.model)}))
        if args.only in (None, "first_frame"):
            print(json.dumps({"first_frame": first_frame_vs_hit(redis, key_file,
                                                                args.identities)}, indent=1))
        if args.only in (None, "throughput"):
            print(json.dumps({"throughput": throughput_on_vs_off(
                args.model, redis, key_file, args.rounds, args.duration_s, args.concurrency)},
                indent=1))
        if args.only in (None, "forgetting"):
            print(json.dumps({"forgetting": forgetting(redis, key_file, args.trials)},
                             indent=1))
    finally:
        redis.stop()
        os.remove(key_file)


if __name__ == "__main__":
    main()
