"""What the overload and soak runs share: fsrst_bench runs, the server's resident memory,
and a Markdown table of goals."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

TESTS = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, TESTS)
from server_process import BENCH_BIN  # noqa: E402


def bench(port: int, *args: str, duration_s: float, warmup_s: float = 1.0) -> dict:
    """One fsrst_bench run against 127.0.0.1:port; its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [BENCH_BIN, f"--server=127.0.0.1:{port}", "--progress=false",
           f"--duration_s={duration_s}", f"--warmup_s={warmup_s}", f"--json_out={out}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s * 3 + 120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{result.stdout}{result.stderr}")
    with open(out) as f:
        data = json.load(f)
    os.unlink(out)
    print(f"  {' '.join(args)}\n    {result.stdout.strip()}", flush=True)
    return data


def capacity_fps(port: int, max_batch_size: int, duration_s: float = 5.0) -> float:
    """Saturated throughput: closed loop with twice the batch size in flight."""
    data = bench(port, f"--concurrency={2 * max_batch_size}", "--references=cached",
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
