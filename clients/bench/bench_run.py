"""Runs fsrst_bench once and returns its JSON: shared by the benchmark report and the
reliability scripts (tests/reliability)."""

import json
import os
import subprocess
import tempfile


# SCHED_FIFO priority for a load generator that must not wait for the CPU it shares with
# the server it measures (see run_bench).
REALTIME = ["chrt", "--fifo", "10"]


def realtime_allowed() -> bool:
    """Whether this process may start others at SCHED_FIFO (root or CAP_SYS_NICE)."""
    return subprocess.run([*REALTIME, "true"], capture_output=True).returncode == 0


def run_bench(bench_bin: str, args, duration_s: float, warmup_s: float,
              realtime: bool = False) -> dict:
    """fsrst_bench with `args` for duration_s after warmup_s; prints its summary line.

    realtime: run it at SCHED_FIFO where allowed, so that on a machine whose cores the
    server saturates, the generator still issues calls on schedule and sees its answers at
    once, as a caller on another machine would. The JSON's "generator_scheduling" says
    which it got ("SCHED_FIFO 10" or "normal")."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    prefix = REALTIME if realtime and realtime_allowed() else []
    cmd = [*prefix, bench_bin, "--progress=false", f"--duration_s={duration_s}",
           f"--warmup_s={warmup_s}", f"--json_out={out}", *args]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True,
                                timeout=duration_s * 4 + 120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}\n{result.stdout}{result.stderr}")
        with open(out) as f:
            data = json.load(f)
        data["generator_scheduling"] = "SCHED_FIFO 10" if prefix else "normal"
    finally:
        os.unlink(out)
    print(f"  {' '.join(args)}\n    {result.stdout.strip()}", flush=True)
    return data
