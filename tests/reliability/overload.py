"""Overload: open-loop load at 3x capacity against fsrst_server, then the load drops.

    /usr/bin/python3 tests/reliability/overload.py [--duration_s 60] [--json_out F]

Checks what an operator relies on under overload:
- frames beyond the queue are refused with RESOURCE_EXHAUSTED, fast (p99 <= 5 ms), timed
  at the caller (from the scheduled arrival) and inside the server
  (fsrst_refused_duration_seconds). The caller is a load generator on the cores the model
  saturates; a real caller runs elsewhere. So by default it runs at SCHED_FIFO where allowed
  (--generator=normal: at the normal priority), and the report prints how late it issued
  its calls;
- accepted frames keep the latency bound the queue implies: at most --max_queue_size
  frames ahead, a running batch per model instance and their own batch,
  (queue + 2 x instances x batch) / the throughput served during the overload;
- the server's resident memory stays under --rss_cap_mib;
- once the load drops the server recovers at once: one caller, no errors, p50 within
  1.5x of its p50 before the overload.
Prints a Markdown table; exits 1 if a check fails. Nothing else should run meanwhile.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
from server_process import (ServerProcess, histogram_buckets,  # noqa: E402
                            histogram_quantile_bound, model_info)
from reliability.load_tools import (RssSampler, add_common_arguments, bench,  # noqa: E402
                                    capacity_fps, finish)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser, duration_s=60)
    parser.add_argument("--overload_factor", type=float, default=3.0)
    parser.add_argument("--max_queue_size", type=int, default=32)
    parser.add_argument("--rss_cap_mib", type=float, default=1024)
    parser.add_argument("--generator", choices=["realtime", "normal"], default="realtime",
                        help="the overload's load generator at SCHED_FIFO (where allowed), or "
                             "at the normal priority, sharing the cores with the model")
    args = parser.parse_args()

    server = ServerProcess(args.model, f"--max_batch_size={args.max_batch_size}",
                           f"--max_queue_size={args.max_queue_size}", *args.server_flags.split())
    try:
        port = server.port
        print("== capacity and one caller before", flush=True)
        instances = int(model_info(server)["instances"])
        capacity = capacity_fps(port, args.max_batch_size, instances)
        before = bench(port, "--concurrency=1", "--references=cached", duration_s=4)
        rate = args.overload_factor * capacity
        print(f"== open loop at {rate:.1f} frames/s ({args.overload_factor}x) for "
              f"{args.duration_s:g} s", flush=True)
        sampler = RssSampler(server.proc.pid)
        refused_before = histogram_buckets(server, "fsrst_refused_duration_seconds")
        overload = bench(port, "--mode=open", f"--rate={rate:.2f}", "--references=cached",
                         "--identities=16", duration_s=args.duration_s, warmup_s=0,
                         realtime=args.generator == "realtime")  # no warm-up: every call counted
        rss = sampler.stop()
        refused_after = histogram_buckets(server, "fsrst_refused_duration_seconds")
        print("== one caller right after", flush=True)
        after = bench(port, "--concurrency=1", "--references=cached", duration_s=4,
                      warmup_s=0)
    finally:
        code = server.stop()

    refused = overload["errors"].get("RESOURCE_EXHAUSTED", 0)
    refused_latency = overload["error_latency_ms"].get("RESOURCE_EXHAUSTED", {})
    # The same refusals timed inside the server (its histogram: the bucket bound at p99). The
    # histogram must have counted exactly the refusals the caller saw, else its p99 is not theirs.
    inf = float("inf")
    server_refused = refused_after.get(inf, 0.0) - refused_before.get(inf, 0.0)
    server_p99_ms = (1000.0 * histogram_quantile_bound(refused_before, refused_after, 0.99)
                     if server_refused > 0 else inf)
    other_errors = {k: v for k, v in overload["errors"].items() if k != "RESOURCE_EXHAUSTED"}
    # Ahead of a frame: the queue, the batches running on every instance, then its own
    # batch; they drain at the rate the server served during the overload. That rate is
    # below the capacity measured before: the refusals' own CPU comes out of the model's.
    bound_ms = (1000.0 * (args.max_queue_size + 2 * instances * args.max_batch_size)
                / overload["throughput_fps"])
    max_rss = max(mib for _, mib in rss)
    print(f"offered {rate:.1f} frames/s, served {overload['throughput_fps']:.1f} "
          f"(capacity {capacity:.1f}), for {overload['duration_s']:.0f} s")
    lag = overload["send_lag_ms"]
    print(f"load generator ({overload['generator_scheduling']}): calls issued after their "
          f"scheduled arrival by p50 {lag['p50']:.2f} / p99 {lag['p99']:.2f} / max "
          f"{lag['max']:.2f} ms; refusals timed from the send, p99 "
          f"{refused_latency.get('from_send', {}).get('p99', 0):.2f} ms")
    goals = [
        ("refused with RESOURCE_EXHAUSTED", f"{refused} of "
         f"{refused + overload['frames_ok'] + sum(other_errors.values())}", "> 0", refused > 0),
        ("other errors", json.dumps(other_errors) if other_errors else "none", "none",
         not other_errors),
        ("RESOURCE_EXHAUSTED latency at the caller, p50 / p99",
         f"{refused_latency.get('p50', 0):.2f} / {refused_latency.get('p99', 0):.2f} ms",
         "p99 <= 5 ms", refused > 0 and refused_latency["p99"] <= 5.0),
        # The caller stops counting at the end of its window; a refusal answered after it is
        # the server's only (one in a 60 s run here). More than a few apart means the
        # histogram counts something else.
        ("RESOURCE_EXHAUSTED counted by the server / at the caller",
         f"{server_refused:.0f} / {refused}", "equal, or up to 3 more in the server",
         refused > 0 and 0 <= server_refused - refused <= 3),
        ("RESOURCE_EXHAUSTED latency in the server, p99", f"<= {server_p99_ms:g} ms",
         "p99 <= 5 ms", server_refused > 0 and server_p99_ms <= 5.0),
        ("accepted frames p50 / p99", f"{overload['latency_ms']['p50']:.0f} / "
         f"{overload['latency_ms']['p99']:.0f} ms", f"p99 <= {bound_ms:.0f} ms (queue bound)",
         overload["latency_ms"]["p99"] <= bound_ms),
        ("server resident memory, max", f"{max_rss:.0f} MiB", f"<= {args.rss_cap_mib:g} MiB",
         max_rss <= args.rss_cap_mib),
        ("one caller after: errors, p50 (before)", f"{sum(after['errors'].values())}, "
         f"{after['latency_ms']['p50']:.1f} ms ({before['latency_ms']['p50']:.1f} ms)",
         "0, p50 <= 1.5x before", not after["errors"]
         and after["latency_ms"]["p50"] <= 1.5 * before["latency_ms"]["p50"]),
        ("server exit code after SIGTERM", str(code), "0", code == 0),
    ]
    return finish(goals, args.json_out, {"capacity_fps": capacity, "rate_fps": rate,
                                         "before": before, "overload": overload, "after": after,
                                         "rss_mib": rss})


if __name__ == "__main__":
    sys.exit(main())
