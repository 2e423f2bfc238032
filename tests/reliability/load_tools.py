"""What the overload and soak runs share: fsrst_bench runs, the server's resident memory,
and a Markdown table of goals."""

import json
import os
import sys
import threading
import time

TESTS = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, TESTS)
sys.path.insert(0, os.path.join(TESTS, "..", "clients", "bench"))
from server_process import BENCH_BIN, ROOT  # noqa: E402
from bench_run import run_bench  # noqa: E402


def bench(port: int, *args: str, duration_s: float, warmup_s: float = 1.0,
          realtime: bool = False) -> dict:
    """One fsrst_bench run against 127.0.0.1:port; its JSON (realtime: see run_bench)."""
    return run_bench(BENCH_BIN, [f"--server=127.0.0.1:{port}", *args], duration_s, warmup_s,
                     realtime=realtime)


def capacity_fps(port: int, max_batch_size: int, instances: int,
                 duration_s: float = 5.0) -> float:
    """Saturated throughput: closed loop with twice the batch size in flight per model
    instance."""
    callers = 2 * max_batch_size * instances
    # The identities the soak's load uses too, so none is left behind to expire.
    data = bench(port, f"--concurrency={callers}", "--references=cached",
                 f"--identities={2 * max_batch_size}", duration_s=duration_s)
    return data["throughput_fps"]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's resident memory every `period_s` on a thread: (seconds, MiB)."""

    def __init__(self, pid: int, period_s: float = 0.5):
        self.samples = []
        self._pid, self._period_s = pid, period_s
        self._stop = threading.Event()
        self._start = time.time()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.time() - self._start, rss_mib(self._pid)))
            self._stop.wait(self._period_s)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.samples


def goals_table(goals) -> str:
    """goals: (name, measured, goal, met) rows -> Markdown."""
    lines = ["| check | measured | goal | met |", "|---|---|---|---|"]
    lines += [f"| {n} | {m} | {g} | {'yes' if ok else '**no**'} |" for n, m, g, ok in goals]
    return "\n".join(lines)


def add_common_arguments(parser, duration_s: float) -> None:
    """The flags both scripts take: the model, how long, the batch size, where the JSON goes."""
    parser.add_argument("--model", default=os.path.join(ROOT, "model", "weights",
                                                         "fsrst_x4_small.pt"))
    parser.add_argument("--duration_s", type=float, default=duration_s)
    parser.add_argument("--max_batch_size", type=int, default=8)
    parser.add_argument("--server_flags", default="",
                        help="more fsrst_server flags, space-separated (e.g. --model_nice=0)")
    parser.add_argument("--json_out")


def finish(goals, json_out, data) -> int:
    """Prints the goals table, writes `data` (with the goals) as JSON; the exit code."""
    print(goals_table(goals))
    if json_out:
        with open(json_out, "w") as f:
            json.dump({**data, "goals": goals}, f, indent=1)
    return 0 if all(ok for *_, ok in goals) else 1
